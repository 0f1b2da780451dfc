package sim

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/cockroachdb/datadriven"
)

// runSeed runs seed with the planted bugs, raft's jitter drawn from the
// seed's stream.
func runSeed(t *testing.T, seed uint64, bugs Bugs) Result {
	t.Helper()
	cryptotest.SetGlobalRandom(t, RaftCryptoSeed(seed))
	opts := Draw(seed)
	opts.Bugs = bugs
	return Run(opts)
}

// verdict is the golden form of a result: ok, or the check that failed.
// The trace is left out: it changes with any change to the engine.
func verdict(r Result) string {
	if r.Failure == nil {
		return "ok"
	}
	return "FAIL " + r.Failure.Check
}

// TestDeterminism runs seeds twice and requires equal traces, and the
// same trace again with the reader `basalt sim` installs: a seed replays
// bit for bit under go test and under the command. It guards against
// raft or the standard library growing a source of randomness the
// simulator does not pin.
func TestDeterminism(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		var lines []string
		for range 2 {
			t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
				lines = append(lines, runSeed(t, seed, Bugs{}).Line())
			})
		}
		restore := SeedCryptoRand(seed)
		lines = append(lines, Run(Draw(seed)).Line())
		restore()
		if lines[0] != lines[1] || lines[0] != lines[2] {
			t.Errorf("seed %d is not deterministic:\n%s", seed, strings.Join(lines, "\n"))
		}
	}
}

// TestDeterminismDetects proves the trace hash tells runs apart: another
// jitter stream gives another trace.
func TestDeterminismDetects(t *testing.T) {
	opts := Draw(1)
	cryptotest.SetGlobalRandom(t, RaftCryptoSeed(1)+1)
	other := Run(opts)
	var same Result
	t.Run("same", func(t *testing.T) { same = runSeed(t, 1, Bugs{}) })
	if other.Trace == same.Trace {
		t.Fatalf("two jitter streams gave the same trace %016x", same.Trace)
	}
}

// TestCorpus runs testdata/sim: seeds that once failed (the regression
// corpus) and, for each planted bug, a seed that catches it.
//
//	run seed=N [bug=NAME]...
//	----
//	ok | FAIL <check>
func TestCorpus(t *testing.T) {
	caught := map[string]uint64{}
	datadriven.Walk(t, "../testdata/sim", func(t *testing.T, path string) {
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			if d.Cmd != "run" {
				d.Fatalf(t, "unknown command %q", d.Cmd)
			}
			var seed uint64
			var bugs Bugs
			for _, a := range d.CmdArgs {
				switch a.Key {
				case "seed":
					v, err := strconv.ParseUint(a.Vals[0], 10, 64)
					if err != nil {
						d.Fatalf(t, "seed: %v", err)
					}
					seed = v
				case "bug":
					for _, b := range a.Vals {
						if err := bugs.SetBug(b); err != nil {
							d.Fatalf(t, "%v", err)
						}
					}
				}
			}
			var r Result
			t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) { r = runSeed(t, seed, bugs) })
			if r.Failure != nil {
				t.Logf("%s", r.Line())
				if b := bugs.String(); b != "none" && !strings.Contains(b, ",") {
					caught[b] = seed
				}
			}
			return verdict(r)
		})
	})
	for _, b := range BugNames {
		if s, ok := caught[b]; !ok || s > 500 {
			t.Errorf("planted bug %s is not caught by a seed <= 500 in the corpus", b)
		}
	}
}

// TestFreshSeeds runs a few seeds no run has tried before (or those in
// SIM_SEEDS, comma-separated). A failure names the seed: add it to the
// corpus once the bug is fixed.
func TestFreshSeeds(t *testing.T) {
	var seeds []uint64
	if env := os.Getenv("SIM_SEEDS"); env != "" {
		for _, f := range strings.Split(env, ",") {
			s, err := strconv.ParseUint(strings.TrimSpace(f), 10, 64)
			if err != nil {
				t.Fatalf("SIM_SEEDS: %v", err)
			}
			seeds = append(seeds, s)
		}
	} else {
		var b [8]byte
		for range 4 {
			if _, err := rand.Read(b[:]); err != nil {
				t.Fatal(err)
			}
			seeds = append(seeds, binary.LittleEndian.Uint64(b[:])%1e9)
		}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			r := runSeed(t, seed, Bugs{})
			t.Log(r.Line())
			if r.Failure != nil {
				t.Errorf("%s\nreplay: basalt sim --seed %d", r.Line(), seed)
			}
		})
	}
}

// BenchmarkSpeed measures simulated seconds per wall second for 3 members
// at about 100 requests/s with the faults of seed 1.
func BenchmarkSpeed(b *testing.B) {
	var sim time.Duration
	for i := range b.N {
		opts := Draw(uint64(i + 1))
		opts.Members, opts.Work.Rate = 3, 100
		restore := SeedCryptoRand(opts.Seed)
		r := Run(opts)
		restore()
		if r.Failure != nil {
			b.Fatal(r.Line())
		}
		sim += r.Stats.SimTime
	}
	b.ReportMetric(sim.Seconds()/b.Elapsed().Seconds(), "sim-s/s")
}
