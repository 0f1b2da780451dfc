#!/usr/bin/env bash
# etcd v3.7.3's tests/common conformance suite on three members without TLS.
#
# In v3.7.3 every three-member case of clusterTestCases uses TLS (the NoTLS
# case is one member), which basalt does not serve. This copies the suite
# from the module cache next to the prepared one (/tmp/etcd-conformance),
# adds a case "NoTLS3" = {ClusterSize: 3}, builds it once, and runs it on
# BINDIR (basalt named etcd, plus etcdctl and etcdutl) under the machine-wide
# conformance lock:
#
#   scripts/conformance3.sh BINDIR ['/^NoTLS3$'] [test binary args...]
#   scripts/conformance3.sh /tmp/bin-me 'TestMemberAdd/.*/.*/.*/^NoTLS3$'
#
# Output: ${OUT:-/tmp/conformance3.log}, summary on stdout.
set -euo pipefail
src=/tmp/etcd-conformance
dst=${CONF3_DIR:-/tmp/etcd-conformance3}
bindir=${1:?usage: conformance3.sh BINDIR [RUN_REGEX] [args...]}
shift
run=${1:-'/^NoTLS3$'}
[ $# -gt 0 ] && shift
if [ ! -x "$dst/common.test" ]; then
	mods=$(go env GOMODCACHE)/go.etcd.io/etcd/tests/v3@v3.7.3/common
	rm -rf "$dst"
	mkdir -p "$dst/common"
	cp "$src/go.mod" "$src/go.sum" "$dst/"
	cp "$mods"/*.go "$dst/common/"
	chmod -R u+w "$dst"
	python3 - "$dst/common/e2e_test.go" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
anchor = '''			config: config.ClusterConfig{ClusterSize: 1},
		},'''
assert anchor in s, "e2e_test.go changed: no NoTLS case to add NoTLS3 after"
s = s.replace(anchor, anchor + '''
		{
			name:   "NoTLS3",
			config: config.ClusterConfig{ClusterSize: 3},
		},''', 1)
open(p, 'w').write(s)
PY
	(cd "$dst" && GOFLAGS=-mod=mod GOPROXY=off go test -c -tags e2e -o "$dst/common.test" ./common)
fi
sed -e "s#^HERE=/tmp/etcd-conformance\$#HERE=$dst#" -e "s#-cert-dir=\"\$HERE/fixtures\"#-cert-dir=$src/fixtures#" "$src/run.sh" >"$dst/run.sh"
chmod +x "$dst/run.sh"
mkdir -p "$dst/work"
flock /tmp/conformance.lock env OUT="${OUT:-/tmp/conformance3.log}" "$dst/run.sh" "$bindir" "$run" "$@"
