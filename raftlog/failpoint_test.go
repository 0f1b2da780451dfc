package raftlog

import (
	"errors"
	"fmt"
	"testing"

	"github.com/pingcap/failpoint"

	"github.com/basaltdb/basalt/diskio"
)

// countTerm fires a failpoint at its n-th evaluation (0-based) only.
func countTerm(n int) string {
	if n == 0 {
		return "1*return(true)"
	}
	return fmt.Sprintf("%d*off->1*return(true)", n)
}

// TestFailpoints fires each crash point at its n-th evaluation, for every n
// the workload reaches, crashes the disk there (keeping nothing unsynced,
// or everything), and requires recovery to return a state written since
// the last acknowledged one, plus what each point promises about the
// snapshot being written.
func TestFailpoints(t *testing.T) {
	opts := Options{SegmentBytes: 2048, SnapshotsRetained: 2, EntryCacheBytes: 4096}
	const steps = 30
	for _, fp := range []string{
		FailpointWALBeforeSync, FailpointWALAfterSync,
		FailpointSnapBeforeRename, FailpointSnapAfterRename, FailpointBeforeRelease,
	} {
		t.Run(fp[len(failpointPrefix):], func(t *testing.T) {
			fired := 0
			for n := 0; ; n++ {
				disk := diskio.NewSim()
				r := newRunner(t, 3, disk, opts)
				if err := failpoint.Enable(fp, countTerm(n)); err != nil {
					t.Fatal(err)
				}
				err := r.run(steps)
				if err := failpoint.Disable(fp); err != nil {
					t.Fatal(err)
				}
				if err == nil {
					break
				}
				if !errors.Is(err, ErrFailpoint) {
					t.Fatalf("n=%d: %v", n, err)
				}
				fired++
				for _, o := range []struct {
					name string
					opts diskio.CrashOptions
				}{{"drop-all", diskio.CrashDropAll}, {"keep-all", diskio.CrashKeepAll}} {
					checkSnapshotPromise(t, disk.CrashWith(nil, o.opts), fp, o.name, r.lastSnap, opts)
					r.recoverAndCheck(disk.CrashWith(nil, o.opts), fmt.Sprintf("n=%d %s", n, o.name), uint64(n), 5)
				}
			}
			if fired == 0 {
				t.Fatalf("%s never fired", fp)
			}
			t.Logf("fired at %d points", fired)
		})
	}
}

// checkSnapshotPromise checks where a crash at a snapshot's crash point
// leaves that snapshot: not before its rename; after the rename only if
// the directory change survived; before release, it is the base.
func checkSnapshotPromise(t *testing.T, d *diskio.Sim, fp, outcome string, snap uint64, opts Options) {
	var want func(base uint64) bool
	switch {
	case fp == FailpointSnapBeforeRename, fp == FailpointSnapAfterRename && outcome == "drop-all":
		want = func(base uint64) bool { return base != snap }
	case fp == FailpointSnapAfterRename, fp == FailpointBeforeRelease:
		want = func(base uint64) bool { return base == snap }
	default:
		return
	}
	l, err := Open(d, envDir, opts)
	if err != nil {
		t.Fatalf("%s %s: %v", fp, outcome, err)
	}
	defer l.Close()
	if first, _ := l.FirstIndex(); !want(first - 1) {
		t.Fatalf("%s %s: recovered base %d, snapshot being written %d", fp, outcome, first-1, snap)
	}
}
