package raftlog

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/basaltdb/basalt/diskio"
)

// crashOutcome is one post-crash disk.
type crashOutcome struct {
	name string
	disk *diskio.Sim
}

// crashOutcomes are the post-crash disks each crash point is checked on:
// the two extremes, then random mixes of kept, torn and dropped pages.
func crashOutcomes(disk *diskio.Sim, seed uint64) []crashOutcome {
	out := []crashOutcome{
		{"drop-all", disk.CrashWith(nil, diskio.CrashDropAll)},
		{"keep-all", disk.CrashWith(nil, diskio.CrashKeepAll)},
	}
	for i := range uint64(3) {
		out = append(out, crashOutcome{fmt.Sprintf("random-%d", i), disk.Crash(rand.New(rand.NewPCG(seed, i)))})
	}
	return out
}

// TestCrashAtEveryStep runs a workload, crashes the simulated disk at its
// k-th mutating operation (write, sync, create, rename, remove, ...) for
// every k, reopens, and requires the log to be one of the states written
// since the last acknowledged Save: every entry whose sync returned is
// there, nothing that was never written shows up, and the log keeps
// working. RAFTLOG_CRASH_SEEDS=n widens the sweep to n workloads.
func TestCrashAtEveryStep(t *testing.T) {
	seeds := 4
	if s := os.Getenv("RAFTLOG_CRASH_SEEDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		seeds = n
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			crashEveryStep(t, seed, 60, Options{SegmentBytes: 2048, SnapshotsRetained: 2, EntryCacheBytes: 1024})
		})
	}
}

func crashEveryStep(t *testing.T, seed uint64, steps int, opts Options) {
	// A run without a crash counts the steps and must itself be clean.
	clean := diskio.NewSim()
	r := newRunner(t, seed, clean, opts)
	if err := r.run(steps); err != nil {
		t.Fatalf("workload without faults: %v", err)
	}
	total := clean.Mutations()
	t.Logf("seed %d: %d mutating operations", seed, total)
	for k := range total {
		disk := diskio.NewSim()
		disk.SetInjector(diskio.If(diskio.Mutating, diskio.OnIndex(k, diskio.CrashNow())))
		r := newRunner(t, seed, disk, opts)
		err := r.run(steps)
		if !errors.Is(err, diskio.ErrCrashed) {
			t.Fatalf("k=%d: workload ended with %v, want a crash", k, err)
		}
		for _, o := range crashOutcomes(disk, seed*1000+uint64(k)) {
			r.recoverAndCheck(o.disk, fmt.Sprintf("seed=%d k=%d %s", seed, k, o.name), seed*1000+uint64(k), 8)
		}
	}
}
