#!/usr/bin/env bash
# Benchmarks basalt against etcd v3.7.3 with the same gRPC load (README.md).
#
# Builds etcd v3.7.3 from the Go module proxy into a temporary folder
# outside the repository (removed at the end) unless ETCD_BIN is set;
# builds basalt and the load generator from this checkout unless
# BASALT_BIN is set. Arguments go to the load generator, e.g.
#
#   scripts/bench-vs-etcd/run.sh                       # 3 rounds of 10 s per workload and server
#   scripts/bench-vs-etcd/run.sh -rounds 5 -workloads put/200,txn-put/200
#   ETCD_BIN=/path/to/etcd scripts/bench-vs-etcd/run.sh -together=false
#   BENCH_NICE=-5 scripts/bench-vs-etcd/run.sh         # favour the benchmark over other load (root only)
#   BENCH_SERVER_CPUS=1 BENCH_LOAD_CPUS=0 scripts/bench-vs-etcd/run.sh
#                         # servers on CPU 1, the load generator on CPU 0 (taskset), so that the
#                         # generator's own CPU does not come out of the servers' share
set -euo pipefail

etcd_version=v3.7.3
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-vs-etcd-build.XXXXXX")
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
case "$tmp/" in
"$root"/*)
	echo "run.sh: TMPDIR must be outside the repository" >&2
	exit 2
	;;
esac

if [[ -z "${ETCD_BIN:-}" ]]; then
	echo "run.sh: building etcd $etcd_version from the module proxy in $tmp/etcd" >&2
	mkdir -p "$tmp/etcd"
	cat >"$tmp/etcd/main.go" <<'EOF'
// Command etcd is etcd's server, built for basalt's benchmark.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
	(
		cd "$tmp/etcd"
		export GOWORK=off GOFLAGS=-mod=mod
		go mod init bench.local/etcd >/dev/null 2>&1
		go get "go.etcd.io/etcd/server/v3@$etcd_version"
		go mod tidy
		go build -o "$tmp/bin/etcd" .
	)
	ETCD_BIN=$tmp/bin/etcd
fi
if [[ -z "${BASALT_BIN:-}" ]]; then
	(cd "$root" && go build -o "$tmp/bin/basalt" .)
	BASALT_BIN=$tmp/bin/basalt
fi
(cd "$root" && go build -o "$tmp/bin/bench-vs-etcd" ./scripts/bench-vs-etcd)

"$ETCD_BIN" --version | sed -n 1p >&2
"$BASALT_BIN" --version | sed -n 1,2p >&2
pin=()
if [[ -n "${BENCH_SERVER_CPUS:-}${BENCH_LOAD_CPUS:-}" ]]; then
	if [[ -z "${BENCH_SERVER_CPUS:-}" || -z "${BENCH_LOAD_CPUS:-}" ]]; then
		echo "run.sh: set both BENCH_SERVER_CPUS and BENCH_LOAD_CPUS, or neither" >&2
		exit 2
	fi
	# The generator starts the servers: each runs through a wrapper that pins it.
	for name in basalt etcd; do
		bin=BASALT_BIN
		[[ $name == etcd ]] && bin=ETCD_BIN
		printf '#!/bin/sh\nexec taskset -c %s %q "$@"\n' "$BENCH_SERVER_CPUS" "${!bin}" >"$tmp/bin/pinned-$name"
		chmod +x "$tmp/bin/pinned-$name"
	done
	BASALT_BIN=$tmp/bin/pinned-basalt ETCD_BIN=$tmp/bin/pinned-etcd
	pin=(taskset -c "$BENCH_LOAD_CPUS")
	echo "run.sh: servers on CPUs $BENCH_SERVER_CPUS, the load generator on CPUs $BENCH_LOAD_CPUS" >&2
else
	echo "run.sh: $(nproc) cores, shared by the servers and the load generator" >&2
fi
nice=()
if [[ -n "${BENCH_NICE:-}" ]]; then
	nice=(nice -n "$BENCH_NICE")
fi
"${nice[@]}" "${pin[@]}" "$tmp/bin/bench-vs-etcd" -basalt-bin "$BASALT_BIN" -etcd-bin "$ETCD_BIN" "$@"
