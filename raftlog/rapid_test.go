package raftlog

import (
	"errors"
	"math/rand/v2"
	"testing"

	"pgregory.net/rapid"

	"github.com/basaltdb/basalt/diskio"
)

// TestRapidCrash draws a workload, a crash point, a crash model (how many
// dirty pages are kept, torn or dropped, how many directory changes
// survive), optionally a second crash during recovery, and requires what
// TestCrashAtEveryStep requires. A failure shrinks to a small workload.
func TestRapidCrash(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		seed := rapid.Uint64().Draw(t, "seed")
		steps := rapid.IntRange(1, 40).Draw(t, "steps")
		opts := Options{
			SegmentBytes:      rapid.Int64Range(segmentBytesMin, 8<<10).Draw(t, "segmentBytes"),
			SnapshotsRetained: rapid.IntRange(1, 4).Draw(t, "snapshotsRetained"),
			EntryCacheBytes:   rapid.Int64Range(1, 64<<10).Draw(t, "entryCacheBytes"),
		}
		clean := diskio.NewSim()
		if err := newRunner(t, seed, clean, opts).run(steps); err != nil {
			t.Fatalf("workload without faults: %v", err)
		}
		k := rapid.Int64Range(0, clean.Mutations()-1).Draw(t, "crashAt")
		disk := diskio.NewSim()
		disk.SetInjector(diskio.If(diskio.Mutating, diskio.OnIndex(k, diskio.CrashNow())))
		r := newRunner(t, seed, disk, opts)
		if err := r.run(steps); !errors.Is(err, diskio.ErrCrashed) {
			t.Fatalf("workload ended with %v, want a crash", err)
		}
		keep := rapid.Uint32Range(0, 1_000_000).Draw(t, "pageKeepPPM")
		o := diskio.CrashOptions{
			PageKeepPPM: keep,
			PageTornPPM: rapid.Uint32Range(0, 1_000_000-keep).Draw(t, "pageTornPPM"),
			MetaKeepPPM: rapid.Uint32Range(0, 1_000_000).Draw(t, "metaKeepPPM"),
		}
		crashSeed := rapid.Uint64().Draw(t, "crashSeed")
		d := disk.CrashWith(rand.New(rand.NewPCG(crashSeed, 1)), o)
		if rapid.Bool().Draw(t, "crashDuringRecovery") {
			k2 := rapid.Int64Range(0, 30).Draw(t, "recoveryCrashAt")
			d.SetInjector(diskio.If(diskio.Mutating, diskio.OnIndex(k2, diskio.CrashNow())))
			l, err := Open(d, envDir, opts)
			switch {
			case err == nil:
				d.SetInjector(nil)
				if err := l.Close(); err != nil {
					t.Fatalf("close: %v", err)
				}
			case !errors.Is(err, diskio.ErrCrashed):
				t.Fatalf("recovery: %v", err)
			default:
				d = d.CrashWith(rand.New(rand.NewPCG(crashSeed, 2)), o)
			}
		}
		r.recoverAndCheck(d, "recovery", crashSeed, rapid.IntRange(0, 10).Draw(t, "stepsAfter"))
	})
}
