package engine

import (
	"fmt"
	"math/rand/v2"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"pgregory.net/rapid"

	"github.com/basaltdb/basalt/diskio"
	"github.com/basaltdb/basalt/engine/mvcc"
)

// history is what a member's store holds: its revisions and the hash of
// every revision it can still read.
type history struct {
	rev, compact int64
	hashes       []uint32 // hashes[i] is HashKV(compact+i)
}

func historyOf(t *rapid.T, v *mvcc.View) history {
	h := history{rev: v.Rev(), compact: v.CompactRev()}
	for r := max(h.compact, 1); r <= h.rev; r++ {
		hash, _, err := v.HashKV(r)
		if err != nil {
			t.Fatalf("HashKV(%d) of a store at [%d, %d]: %v", r, h.compact, h.rev, err)
		}
		h.hashes = append(h.hashes, hash)
	}
	return h
}

// TestSnapshotRestartProperty: whatever mix of writes, compactions,
// snapshots (written at once, held while writes go on, or failed),
// restarts and crashes, a member comes back with the same store: the same
// revisions and the same content at every revision it could read before.
func TestSnapshotRestartProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		h := &harness{t: rt, disk: diskio.NewSim(), snapshotEntries: uint64(rapid.IntRange(1, 8).Draw(rt, "snapshotEntries")),
			snapshotsRetained: rapid.IntRange(1, 3).Draw(rt, "snapshotsRetained")}
		h.start()
		key := rapid.SampledFrom([]string{"a", "b", "c", "d"})
		for range rapid.IntRange(1, 60).Draw(rt, "steps") {
			switch rapid.IntRange(0, 9).Draw(rt, "action") {
			case 0, 1, 2, 3:
				h.write(putOp(key.Draw(rt, "key"), fmt.Sprint(h.view.Rev())))
			case 4:
				h.write(&pb.InternalRaftRequest{DeleteRange: &pb.DeleteRangeRequest{Key: []byte(key.Draw(rt, "key"))}})
			case 5:
				rev := rapid.Int64Range(0, h.view.Rev()).Draw(rt, "compactRev")
				h.write(&pb.InternalRaftRequest{Compaction: &pb.CompactionRequest{Revision: rev}})
			case 6:
				if h.held == nil {
					h.hold = true
				}
			case 7:
				if job := h.held; job != nil {
					h.hold, h.held = false, nil
					var fail error
					if rapid.Bool().Draw(rt, "fail") {
						fail = fmt.Errorf("injected")
					}
					h.finishSnapshot(job, fail)
					h.stabilize()
				}
			case 8, 9:
				before := historyOf(rt, h.view)
				if rapid.Bool().Draw(rt, "crash") {
					h.disk = h.disk.Crash(rand.New(rand.NewPCG(rapid.Uint64().Draw(rt, "crashSeed"), 1)))
				} else if err := h.log.Close(); err != nil {
					rt.Fatal(err)
				}
				h.hold = false
				h.start()
				after := historyOf(rt, h.view)
				if fmt.Sprint(after) != fmt.Sprint(before) {
					rt.Fatalf("before the restart %+v, after %+v", before, after)
				}
			}
		}
	})
}
