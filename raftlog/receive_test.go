package raftlog

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/basaltdb/basalt/diskio"
)

func openSim(t *testing.T, fsys *diskio.Sim, dir string) *Log {
	t.Helper()
	l, err := Open(fsys, dir, Options{SegmentBytes: segmentBytesMin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestCopySnapshot moves a leader's base snapshot into a follower's log the
// way a transport does, checks it against the Descriptor the message
// carries, and refuses bodies that do not match it, leaving no file.
func TestCopySnapshot(t *testing.T) {
	fsys := diskio.NewSim()
	src, dst := openSim(t, fsys, "a"), openSim(t, fsys, "b")
	if err := src.Save(hardStateP(2, 1, 5), ents(1, 6, 2, 10), true); err != nil {
		t.Fatal(err)
	}
	meta := &raftpb.SnapshotMetadata{Index: new(uint64(5)), Term: new(uint64(2)), ConfState: &raftpb.ConfState{Voters: []uint64{1, 2}}}
	w, err := src.CreateSnapshot(meta)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(strings.Repeat("engine state ", 1000))
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := src.SnapshotSaved(meta); err != nil {
		t.Fatal(err)
	}
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}

	desc, err := ParseDescriptor(snap.GetData())
	if err != nil {
		t.Fatal(err)
	}
	damaged := bytes.Clone(body)
	damaged[100] ^= 1
	otherDesc := desc
	otherDesc.Index = 4
	for _, c := range []struct {
		name string
		snap *raftpb.Snapshot
		body []byte
	}{
		{"short", snap, body[:len(body)-1]},
		{"damaged", snap, damaged},
		{"descriptor of another snapshot", &raftpb.Snapshot{Metadata: meta, Data: otherDesc.Marshal()}, body},
		{"no descriptor", &raftpb.Snapshot{Metadata: meta}, body},
	} {
		if err := dst.ReceiveSnapshot(c.snap, bytes.NewReader(c.body)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: ReceiveSnapshot returned %v, want ErrCorrupt", c.name, err)
		}
		if names, _ := fsys.List("b/snap"); len(names) != 0 {
			t.Fatalf("%s: a refused body left %v", c.name, names)
		}
	}

	if err := CopySnapshot(dst, src, snap); err != nil {
		t.Fatal(err)
	}
	if err := dst.ApplySnapshot(meta); err != nil {
		t.Fatal(err)
	}
	got, r, err := dst.OpenSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(b, body) || got.GetIndex() != 5 || got.GetTerm() != 2 {
		t.Fatalf("received snapshot %d/%d, %d bytes (%v), want 5/2, %d bytes", got.GetIndex(), got.GetTerm(), len(b), err, len(body))
	}

	// A copy made after the sender's base moved on is refused.
	stale := &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{Index: new(uint64(3)), Term: new(uint64(2))}, Data: snap.GetData()}
	if err := CopySnapshot(dst, src, stale); !errors.Is(err, ErrSnapshotInvalid) {
		t.Fatalf("copying a snapshot the sender no longer has as its base: %v", err)
	}
}
