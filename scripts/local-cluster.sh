#!/usr/bin/env bash
# Starts a local cluster of basalt members on loopback, as etcd's Procfile
# does, and stops it on Ctrl-C.
#
#   scripts/local-cluster.sh [MEMBERS] [BASE_PORT]   default 3 members from port 2379:
#                                                    member i serves clients on BASE_PORT+2(i-1)
#                                                    and peers on the port after it
#
# Data dirs and logs go to ${CLUSTER_DIR:-a new temporary folder}; BASALT_BIN
# runs a prebuilt binary instead of building this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3}
base=${2:-2379}
dir=${CLUSTER_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/basalt-cluster.XXXXXX")}
mkdir -p "$dir"
bin=${BASALT_BIN:-$dir/basalt}
[ -n "${BASALT_BIN:-}" ] || go build -o "$bin" .
cluster=
for i in $(seq 1 "$n"); do
	cluster+="${cluster:+,}m$i=http://127.0.0.1:$((base + 2 * i - 1))"
done
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
endpoints=
for i in $(seq 1 "$n"); do
	client=http://127.0.0.1:$((base + 2 * i - 2))
	peer=http://127.0.0.1:$((base + 2 * i - 1))
	endpoints+="${endpoints:+,}$client"
	"$bin" --name "m$i" --data-dir "$dir/m$i" \
		--listen-client-urls "$client" --advertise-client-urls "$client" \
		--listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
		--initial-cluster "$cluster" --initial-cluster-token "local-cluster" \
		--initial-cluster-state new >"$dir/m$i.log" 2>&1 &
	pids+=($!)
done
echo "$n members in $dir; logs in $dir/m*.log"
echo "etcdctl --endpoints=$endpoints member list"
wait
