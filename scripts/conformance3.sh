#!/usr/bin/env bash
# etcd v3.7.3's tests/common conformance suite on three members without TLS.
#
# In v3.7.3 every three-member case of clusterTestCases uses TLS (the NoTLS
# case is one member), which basalt does not serve. This copies the suite from
# the module cache into the folder scripts/conformance/run.sh prepares, adds a
# case "NoTLS3" = {ClusterSize: 3}, builds it once, and runs it through run.sh
# (basalt from this checkout or BASALT_BIN, under /tmp/conformance.lock):
#
#   scripts/conformance3.sh ['/^NoTLS3$'] [test binary args...]
#   scripts/conformance3.sh 'TestMemberAdd/.*/.*/.*/^NoTLS3$'
#
# Output: ${OUT:-CONFORMANCE_DIR/last-run3.log}, summary on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
run=${1:-'/^NoTLS3$'}
[[ $# -gt 0 ]] && shift
dir=$("$here/conformance/run.sh" --prepare)
dst=$dir/notls3
# One build at a time per folder, as run.sh prepares it.
exec 8>>"$dir/.prepare.lock"
flock 8
if [[ ! -x "$dst/common.test" ]]; then
	mods=$(cd "$dir/mod" && GOWORK=off GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' go.etcd.io/etcd/tests/v3)/common
	rm -rf "$dst"
	mkdir -p "$dst/common"
	cp "$dir/mod/go.mod" "$dir/mod/go.sum" "$dst/"
	cp "$mods"/*.go "$dst/common/"
	chmod -R u+w "$dst"
	awk '
		{ print }
		prev ~ /^\t\t\tconfig: config\.ClusterConfig\{ClusterSize: 1\},$/ && /^\t\t},$/ {
			print "\t\t{"
			print "\t\t\tname:   \"NoTLS3\","
			print "\t\t\tconfig: config.ClusterConfig{ClusterSize: 3},"
			print "\t\t},"
			added++
		}
		{ prev = $0 }
		END { if (added != 1) { print "e2e_test.go changed: no NoTLS case to add NoTLS3 after" > "/dev/stderr"; exit 1 } }
	' "$mods/e2e_test.go" >"$dst/common/e2e_test.go"
	(cd "$dst" && GOWORK=off GOFLAGS=-mod=mod go test -c -tags e2e -o "$dst/common.test.tmp" ./common)
	mv "$dst/common.test.tmp" "$dst/common.test"
fi
exec 8>&-
OUT=${OUT:-$dir/last-run3.log} CONFORMANCE_TEST_BIN=$dst/common.test exec "$here/conformance/run.sh" "$run" "$@"
