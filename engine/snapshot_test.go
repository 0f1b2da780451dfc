package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/basaltdb/basalt/diskio"
	"github.com/basaltdb/basalt/engine/mvcc"
	"github.com/basaltdb/basalt/raftlog"
)

// sampleJob is a job over a store with history, a deletion and a
// compaction, at index 42 of term 7.
func sampleJob(t *testing.T) *SnapshotJob {
	t.Helper()
	s := mvcc.New()
	for i := range 30 {
		txn := s.Begin()
		txn.Put(fmt.Appendf(nil, "key%02d", i%11), fmt.Appendf(nil, "value %d", i), 0, false)
		if i%7 == 0 {
			txn.DeleteRange([]byte("key03"), nil)
		}
		txn.End()
	}
	if err := s.Compact(12); err != nil {
		t.Fatal(err)
	}
	return &SnapshotJob{
		Meta: &raftpb.SnapshotMetadata{Index: new(uint64(42)), Term: new(uint64(7)), ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}},
		view: s.View(),
	}
}

func snapshotBody(t *testing.T, job *SnapshotJob) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := WriteSnapshot(&b, job); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestSnapshotBodyRoundTrip(t *testing.T) {
	job := sampleJob(t)
	body := snapshotBody(t, job)
	st, err := readSnapshot(bytes.NewReader(body), job.Meta)
	if err != nil {
		t.Fatal(err)
	}
	store := st.store
	want, wantCompact, _ := job.view.HashKV(0)
	got, gotCompact, _ := store.View().HashKV(0)
	if got != want || gotCompact != wantCompact || store.Rev() != job.view.Rev() {
		t.Fatalf("restored rev %d compact %d hash %08x; wrote rev %d compact %d hash %08x",
			store.Rev(), gotCompact, got, job.view.Rev(), wantCompact, want)
	}
	// The same state writes the same bytes.
	if again := snapshotBody(t, job); !bytes.Equal(again, body) {
		t.Fatal("writing the same job twice gave different bodies")
	}
}

// TestSnapshotBodyDamage: every flipped byte, every truncation and a read
// error at every offset make readSnapshot fail; it never returns a store
// built from part of a body.
func TestSnapshotBodyDamage(t *testing.T) {
	job := sampleJob(t)
	body := snapshotBody(t, job)
	t.Logf("body of %d bytes", len(body))
	for i := range body {
		b := bytes.Clone(body)
		b[i] ^= 0x10
		if s, err := readSnapshot(bytes.NewReader(b), job.Meta); err == nil || s != nil {
			t.Fatalf("byte %d of %d flipped: restored without error", i, len(body))
		}
		if s, err := readSnapshot(bytes.NewReader(body[:i]), job.Meta); !errors.Is(err, ErrSnapshotCorrupt) && !errors.Is(err, mvcc.ErrCorrupt) || s != nil {
			t.Fatalf("truncated to %d of %d bytes: %v, want a corruption error", i, len(body), err)
		}
		injected := errors.New("injected read error")
		r := io.MultiReader(bytes.NewReader(body[:i]), &errReader{injected})
		if s, err := readSnapshot(r, job.Meta); !errors.Is(err, injected) || s != nil {
			t.Fatalf("read error after %d of %d bytes: %v, want the injected error", i, len(body), err)
		}
	}
	if _, err := readSnapshot(bytes.NewReader(append(bytes.Clone(body), 0)), job.Meta); !errors.Is(err, ErrSnapshotCorrupt) {
		t.Fatalf("a byte after the end: %v", err)
	}
	other := &raftpb.SnapshotMetadata{Index: new(uint64(43)), Term: new(uint64(7)), ConfState: job.Meta.GetConfState()}
	if _, err := readSnapshot(bytes.NewReader(body), other); !errors.Is(err, ErrSnapshotCorrupt) {
		t.Fatalf("a body read for another index: %v", err)
	}
	otherCS := &raftpb.SnapshotMetadata{Index: new(uint64(42)), Term: new(uint64(7)), ConfState: &raftpb.ConfState{Voters: []uint64{1, 2}}}
	if _, err := readSnapshot(bytes.NewReader(body), otherCS); !errors.Is(err, ErrSnapshotCorrupt) {
		t.Fatalf("a body read for another configuration: %v", err)
	}
}

type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }

// TestSnapshotBodyVersions: a body of a newer version, or with a section
// this version does not know, is refused as such, not as corruption.
func TestSnapshotBodyVersions(t *testing.T) {
	job := sampleJob(t)
	body := snapshotBody(t, job)
	v2 := bytes.Clone(body)
	binary.LittleEndian.PutUint32(v2[8:], snapBodyVersion+1)
	if _, err := readSnapshot(bytes.NewReader(v2), job.Meta); !errors.Is(err, ErrSnapshotVersion) {
		t.Fatalf("version %d: %v", snapBodyVersion+1, err)
	}
	// A section of a later version (tag 99) after the last one.
	end := len(body) - 16
	withNew := bytes.Clone(body[:end])
	withNew = binary.LittleEndian.AppendUint32(withNew, 99)
	if _, err := readSnapshot(bytes.NewReader(withNew), job.Meta); !errors.Is(err, ErrSnapshotVersion) {
		t.Fatalf("an unknown section: %v", err)
	}
}

// failingLog fails the body of its snapshot after failAfter bytes.
type failingLog struct {
	*raftlog.Log
	failAfter int64
	err       error
}

func (l *failingLog) OpenSnapshot() (*raftpb.SnapshotMetadata, io.ReadCloser, error) {
	meta, body, err := l.Log.OpenSnapshot()
	if err != nil {
		return nil, nil, err
	}
	r := io.MultiReader(io.LimitReader(body, l.failAfter), &errReader{l.err})
	return meta, struct {
		io.Reader
		io.Closer
	}{r, body}, nil
}

// TestRestartReadErrorFails: a read error anywhere in the snapshot body at
// start is NewNode's error; the member does not start on part of it.
func TestRestartReadErrorFails(t *testing.T) {
	h := &harness{t: t, disk: diskio.NewSim(), snapshotEntries: 5}
	h.start()
	for i := range 12 {
		h.write(putOp(fmt.Sprintf("k%d", i), "v"))
	}
	if err := h.log.Close(); err != nil {
		t.Fatal(err)
	}
	log, err := raftlog.Open(h.disk, "member", raftlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	_, body, err := log.OpenSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	size, err := io.Copy(io.Discard, body)
	body.Close()
	if err != nil || size == 0 {
		t.Fatalf("reading the snapshot body: %d bytes, %v", size, err)
	}
	injected := errors.New("injected read error")
	for _, at := range []int64{0, 1, snapBodyHeaderBytes, size / 2, size - 1, size} {
		_, err := NewNode(Config{
			ID: harnessMemberID, Log: &failingLog{Log: log, failAfter: at, err: injected},
			ElectionTicks: 10, HeartbeatTicks: 1, RequestTimeoutTicks: 100, RequestBytesMax: 1 << 20,
			Rand: h.node.cfg.Rand,
		})
		if !errors.Is(err, injected) {
			t.Fatalf("read error after %d of %d body bytes: NewNode returned %v", at, size, err)
		}
	}
}

func putOp(key, value string) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(key), Value: []byte(value)}}
}
