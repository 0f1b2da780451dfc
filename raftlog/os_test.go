package raftlog

import (
	"testing"

	"github.com/basaltdb/basalt/diskio"
)

// TestOSDriver runs the model workload (appends, overwrites, snapshots,
// snapshots from a leader, clean restarts checked against the model) on
// the real file system, where everything else runs on the simulated disk.
func TestOSDriver(t *testing.T) {
	r := newRunner(t, 11, diskio.OS, Options{SegmentBytes: 8 << 10, SnapshotsRetained: 2, EntryCacheBytes: 4 << 10})
	r.dir = t.TempDir()
	if err := r.run(200); err != nil {
		t.Fatal(err)
	}
	if err := r.reopen(); err != nil {
		t.Fatal(err)
	}
	if err := r.log.Close(); err != nil {
		t.Fatal(err)
	}
}
