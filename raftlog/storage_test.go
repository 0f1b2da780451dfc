package raftlog

import (
	"errors"
	"fmt"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	"github.com/basaltdb/basalt/diskio"
)

// TestStorageMatchesMemoryStorage drives a Log and raft's MemoryStorage
// (the reference implementation of raft.Storage) through the same appends,
// overwrites, snapshots and restarts, and requires every query to agree:
// Entries with its maxSize rule (at least one entry, then as many as fit),
// Term including FirstIndex-1, ErrCompacted and ErrUnavailable. A small
// entry cache makes most reads come back from the segments.
func TestStorageMatchesMemoryStorage(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		disk := diskio.NewSim()
		opts := Options{
			SegmentBytes:    rapid.Int64Range(segmentBytesMin, 4096).Draw(t, "segmentBytes"),
			EntryCacheBytes: rapid.Int64Range(1, 2048).Draw(t, "entryCacheBytes"),
		}
		l, err := Open(disk, envDir, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { l.Close() }()
		ms := raft.NewMemoryStorage()
		term := uint64(1)
		for range rapid.IntRange(1, 60).Draw(t, "steps") {
			first, _ := ms.FirstIndex()
			last, _ := ms.LastIndex()
			switch rapid.IntRange(0, 9).Draw(t, "op") {
			case 0, 1, 2, 3:
				from := rapid.Uint64Range(first, last+1).Draw(t, "from")
				if from <= last {
					term++
				}
				es := make([]*raftpb.Entry, rapid.IntRange(1, 8).Draw(t, "n"))
				for i := range es {
					es[i] = ent(from+uint64(i), term, rapid.IntRange(0, 300).Draw(t, "dataBytes"))
				}
				must(t, l.Save(nil, es, rapid.Bool().Draw(t, "sync")))
				must(t, ms.Append(es))
			case 4:
				if last < first {
					continue
				}
				i := rapid.Uint64Range(first, last).Draw(t, "snapshotAt")
				it, _ := ms.Term(i)
				meta := &raftpb.SnapshotMetadata{Index: new(i), Term: new(it), ConfState: &raftpb.ConfState{Voters: []uint64{1}}}
				commitSnapshot(t, l, meta)
				must(t, l.SnapshotSaved(meta))
				_, err := ms.CreateSnapshot(i, meta.GetConfState(), nil)
				must(t, err)
				must(t, ms.Compact(i))
			case 5:
				term++
				i := rapid.Uint64Range(first, last+10).Draw(t, "applyAt")
				meta := &raftpb.SnapshotMetadata{Index: new(i), Term: new(term), ConfState: &raftpb.ConfState{Voters: []uint64{1}}}
				commitSnapshot(t, l, meta)
				must(t, l.ApplySnapshot(meta))
				must(t, ms.ApplySnapshot(&raftpb.Snapshot{Metadata: meta}))
			case 6:
				must(t, l.Close())
				l, err = Open(disk, envDir, opts)
				must(t, err)
			default:
				compareStorage(t, l, ms)
			}
		}
		compareStorage(t, l, ms)
	})
}

func must(t *rapid.T, err error) {
	if err != nil {
		t.Fatal(err)
	}
}

func commitSnapshot(t *rapid.T, l *Log, meta *raftpb.SnapshotMetadata) {
	w, err := l.CreateSnapshot(meta)
	must(t, err)
	_, err = w.Write([]byte("state"))
	must(t, err)
	must(t, w.Commit())
}

// compareStorage queries both storages over every range around the log
// and one drawn size limit.
func compareStorage(t *rapid.T, l *Log, ms *raft.MemoryStorage) {
	lf, _ := l.FirstIndex()
	mf, _ := ms.FirstIndex()
	ll, _ := l.LastIndex()
	ml, _ := ms.LastIndex()
	if lf != mf || ll != ml {
		t.Fatalf("log [%d, %d], MemoryStorage [%d, %d]", lf, ll, mf, ml)
	}
	for i := max(mf, 2) - 2; i <= ml+1; i++ {
		lt, lerr := l.Term(i)
		mt, merr := ms.Term(i)
		if lt != mt || !errors.Is(lerr, merr) {
			t.Fatalf("Term(%d): %d %v, MemoryStorage %d %v", i, lt, lerr, mt, merr)
		}
	}
	maxSize := rapid.Uint64Range(0, 1200).Draw(t, "maxSize")
	for lo := max(mf, 1) - 1; lo <= ml; lo++ {
		for hi := lo + 1; hi <= ml+1; hi++ {
			le, lerr := l.Entries(lo, hi, maxSize)
			me, merr := ms.Entries(lo, hi, maxSize)
			if !errors.Is(lerr, merr) || describeEntries(le) != describeEntries(me) {
				t.Fatalf("Entries(%d, %d, %d):\n %v %s\nMemoryStorage:\n %v %s", lo, hi, maxSize, lerr, describeEntries(le), merr, describeEntries(me))
			}
			if cap(le) != len(le) {
				t.Fatalf("Entries(%d, %d) returned spare capacity %d: an append by raft would write into the Log", lo, hi, cap(le)-len(le))
			}
		}
	}
}

func describeEntries(es []*raftpb.Entry) string {
	s := ""
	for _, e := range es {
		s += fmt.Sprintf(" %d/%d/%d/%q", e.GetIndex(), e.GetTerm(), e.GetType(), e.GetData())
	}
	return s
}

// TestEntrySizeIsProtoSize: the size Entries counts against maxSize is the
// one raft counts, for set, unset and empty fields alike.
func TestEntrySizeIsProtoSize(t *testing.T) {
	for _, e := range []*raftpb.Entry{
		ent(1, 1, 0), ent(127, 128, 1), ent(1<<40, 1<<20, 300),
		{Index: new(uint64(5)), Term: new(uint64(2)), Type: raftpb.EntryType_EntryConfChangeV2.Enum(), Data: make([]byte, 70000)},
		{Index: new(uint64(5)), Term: new(uint64(2)), Data: []byte{}},
		{Index: new(uint64(5)), Data: []byte("x")},
		{},
	} {
		if got, want := entrySize(e), uint64(proto.Size(e)); got != want {
			t.Errorf("entry %v: size %d, proto.Size %d", e, got, want)
		}
	}
}

// TestEntriesSurviveOverwrite: slices Entries returned are not changed by
// a later overwrite of the entries they hold (raft may still hold them).
func TestEntriesSurviveOverwrite(t *testing.T) {
	l, err := Open(diskio.NewSim(), envDir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Save(hardStateP(1, 1, 0), ents(1, 11, 1, 8), true); err != nil {
		t.Fatal(err)
	}
	got, err := l.Entries(3, 11, ^uint64(0))
	if err != nil {
		t.Fatal(err)
	}
	before := describeEntries(got)
	if err := l.Save(hardStateP(2, 2, 0), ents(5, 8, 2, 8), true); err != nil {
		t.Fatal(err)
	}
	if after := describeEntries(got); after != before {
		t.Fatalf("overwrite changed a returned slice:\n%s\nwas\n%s", after, before)
	}
	got = append(got, ent(99, 9, 1))
	now, _ := l.Entries(3, 8, ^uint64(0))
	if describeEntries(now) != describeEntries(ents(3, 5, 1, 8))+describeEntries(ents(5, 8, 2, 8)) {
		t.Fatalf("log after overwrite: %s", describeEntries(now))
	}
}

// TestTornTailIsCutDurably: after recovery cuts a torn tail, the bytes past
// the cut read as zeros even after another crash, so stale records can
// never reappear behind new ones.
func TestTornTailIsCutDurably(t *testing.T) {
	disk := diskio.NewSim()
	l, err := Open(disk, envDir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Save(hardStateP(1, 1, 0), ents(1, 3, 1, 8), true); err != nil {
		t.Fatal(err)
	}
	if err := l.Save(nil, ents(3, 9, 1, 8), false); err != nil {
		t.Fatal(err)
	}
	torn := l.cur().synced + 16
	name := l.cur().name
	flipBit(t, disk, name, torn, 0)
	d := disk.CrashWith(nil, diskio.CrashKeepAll)
	l, err = Open(d, envDir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	end := l.cur().end
	d = d.CrashWith(nil, diskio.CrashDropAll)
	f, err := d.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rest := make([]byte, 1024)
	n, _ := f.ReadAt(rest, end)
	if n == 0 || !allZero(rest[:n]) {
		t.Fatalf("after the cut at %d, %d bytes read, zero=%v", end, n, allZero(rest[:n]))
	}
}

// TestImpossibleRecoveryCasesPanic: the cells of the decision table that
// contradict themselves are assertions, not decisions.
func TestImpossibleRecoveryCasesPanic(t *testing.T) {
	for _, d := range []damage{{}, {vouched: true}, {newest: true}, {newest: true, vouched: true}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("decide(%+v) did not panic", d)
				}
			}()
			decide(d)
		}()
	}
}
