#!/usr/bin/env bash
# Runs the differential tests of scripts/difftest (README.md there).
#
# If ETCD_BIN or ETCDCTL_BIN is not set, builds etcd v3.7.3 and etcdctl
# v3.7.3 from the Go module proxy into a folder outside the repository
# (DIFFTEST_ETCD_DIR, default ${TMPDIR:-/tmp}/basalt-difftest-etcd-v3.7.3),
# reused on later runs. Arguments go to `go test`, e.g.
#
#   scripts/difftest/run.sh -run TestGRPC -seed 7 -ops 5000
#   scripts/difftest/run.sh -against=etcd          # check the harness
set -euo pipefail

etcd_version=v3.7.3
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

build_etcd() {
	local dir=$1
	mkdir -p "$dir/server" "$dir/etcdctl" "$dir/bin"
	cat >"$dir/server/main.go" <<'EOF'
// Command etcd is etcd's server, built for basalt's differential tests.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
	cat >"$dir/etcdctl/main.go" <<'EOF'
// Command etcdctl is etcd's client, built for basalt's differential tests.
package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() { ctlv3.MustStart() }
EOF
	local mod bin
	for mod in server etcdctl; do
		bin=${mod/server/etcd}
		(
			cd "$dir/$mod"
			export GOWORK=off GOFLAGS=-mod=mod
			[[ -f go.mod ]] || go mod init "difftest.local/$mod" >/dev/null 2>&1
			go get "go.etcd.io/etcd/$mod/v3@$etcd_version"
			go mod tidy
			go build -o "$dir/bin/$bin" .
		)
	done
}

if [[ -z "${ETCD_BIN:-}" || -z "${ETCDCTL_BIN:-}" ]]; then
	dir=${DIFFTEST_ETCD_DIR:-${TMPDIR:-/tmp}/basalt-difftest-etcd-$etcd_version}
	case "$dir/" in
	"$root"/*)
		echo "run.sh: DIFFTEST_ETCD_DIR must be outside the repository" >&2
		exit 2
		;;
	esac
	if [[ ! -x "$dir/bin/etcd" || ! -x "$dir/bin/etcdctl" ]]; then
		echo "run.sh: building etcd $etcd_version and etcdctl into $dir" >&2
		build_etcd "$dir"
	fi
	export ETCD_BIN=${ETCD_BIN:-$dir/bin/etcd}
	export ETCDCTL_BIN=${ETCDCTL_BIN:-$dir/bin/etcdctl}
fi

"$ETCD_BIN" --version | head -1 >&2
cd "$root"
exec go test -tags difftest ./scripts/difftest -count=1 -v -timeout 60m "$@"
