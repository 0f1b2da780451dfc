#!/usr/bin/env bash
# Long simulator sweeps, the part of the simulator's testing that is too
# long for go test.
#
#   scripts/sim-sweep.sh seeds A B [PROCS]   run seeds A..B in PROCS processes
#                                            (default: one per core); print
#                                            the failures and seeds per hour
#   scripts/sim-sweep.sh bugs [MAX] [PROCS]  for each planted bug, run seeds
#                                            1..MAX (default 500) and print
#                                            how many catch it, and the first
#
# One simulation runs per process at a time (raft's jitter source is
# process-wide), so parallelism comes from processes. Output goes to
# ${SIM_OUT:-/tmp/basalt-sim}.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${SIM_OUT:-/tmp/basalt-sim}
mkdir -p "$out"
go build -o "$out/basalt" .

# sweep A B PROCS TAG [ARGS...]: run seeds A..B split over PROCS processes;
# the lines go to $out/TAG.txt.
sweep() {
	local a=$1 b=$2 procs=$3 tag=$4
	shift 4
	local n=$((b - a + 1)) pids=() lo hi
	for ((p = 0; p < procs; p++)); do
		lo=$((a + n * p / procs))
		hi=$((a + n * (p + 1) / procs - 1))
		((lo > hi)) && continue
		"$out/basalt" sim --seeds "$lo-$hi" "$@" >"$out/$tag.$p.txt" 2>&1 &
		pids+=($!)
	done
	for pid in "${pids[@]}"; do wait "$pid" || true; done
	cat "$out/$tag".*.txt >"$out/$tag.txt"
	rm -f "$out/$tag".*.txt
}

procs_default=$(nproc)
case "${1:-}" in
seeds)
	a=${2:?A}
	b=${3:?B}
	procs=${4:-$procs_default}
	start=$(date +%s.%N)
	sweep "$a" "$b" "$procs" seeds
	end=$(date +%s.%N)
	ok=$(grep -c ' ok ' "$out/seeds.txt" || true)
	total=$((b - a + 1))
	echo "$ok of $total seeds ok, $procs processes, $(echo "$end - $start" | bc) s wall"
	echo "seeds/hour: $(echo "$total * 3600 / ($end - $start)" | bc)"
	sim=$(grep -o 'sim=[0-9hms.]*' "$out/seeds.txt" | sed 's/sim=//' | awk '
		{ t = 0; s = $0
		  if (match(s, /[0-9.]+h/)) { t += substr(s, RSTART, RLENGTH - 1) * 3600 }
		  if (match(s, /[0-9.]+m[^s]/) || match(s, /[0-9.]+m$/)) { t += substr(s, RSTART, RLENGTH - 1) * 60 }
		  if (match(s, /[0-9.]+s$/)) { t += substr(s, RSTART, RLENGTH - 1) }
		  sum += t }
		END { print sum }')
	echo "simulated: $sim s, $(echo "$sim / ($end - $start)" | bc) sim-s per wall-s over $procs processes"
	grep -A3 FAIL "$out/seeds.txt" || true
	[[ $ok == "$total" ]]
	;;
bugs)
	max=${2:-500}
	procs=${3:-$procs_default}
	for bug in ack-before-fsync skip-crc read-without-readindex apply-uncommitted skip-hardstate-sync keepalive-without-renew; do
		sweep 1 "$max" "$procs" "bug-$bug" --bug "$bug"
		caught=$(grep FAIL "$out/bug-$bug.txt" | awk '{print $2}' | sort -n)
		first=$(echo "$caught" | head -1)
		echo "$bug: caught by $(echo "$caught" | grep -c . || true) of $max seeds, first seed ${first:-none} ($(grep -m1 -A1 "^seed $first FAIL" "$out/bug-$bug.txt" | tail -1 | sed 's/^ *//' | cut -d' ' -f1))"
	done
	;;
*)
	sed -n '2,15p' "$0"
	exit 2
	;;
esac
