package engine

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/basaltdb/basalt/engine/mvcc"
)

// bench1M is a job over a million keys of 100-byte values, built once.
var bench1M = sync.OnceValue(func() *SnapshotJob {
	s := mvcc.New()
	value := bytes.Repeat([]byte("v"), 100)
	for i := range 1_000_000 {
		t := s.Begin()
		t.Put(fmt.Appendf(nil, "bench/%08d", i), value, 0, false)
		t.End()
	}
	return &SnapshotJob{
		Meta: &raftpb.SnapshotMetadata{Index: new(uint64(1_000_000)), Term: new(uint64(2)), ConfState: &raftpb.ConfState{Voters: []uint64{1}}},
		view: s.View(),
	}
})

// BenchmarkSnapshotWrite1M encodes the body of a snapshot of a million
// keys (the CPU part of taking it; the server adds the file's writes and
// one fsync).
func BenchmarkSnapshotWrite1M(b *testing.B) {
	job := bench1M()
	var n countWriter
	b.ResetTimer()
	for b.Loop() {
		n = 0
		if err := WriteSnapshot(&n, job); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(n))
	b.ReportMetric(float64(n)/(1<<20), "MiB/body")
}

// BenchmarkSnapshotRestore1M decodes that body into a store, as a restart
// or an install does.
func BenchmarkSnapshotRestore1M(b *testing.B) {
	job := bench1M()
	var body bytes.Buffer
	if err := WriteSnapshot(&body, job); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(body.Len()))
	b.ResetTimer()
	for b.Loop() {
		if _, err := readSnapshot(bytes.NewReader(body.Bytes()), job.Meta); err != nil {
			b.Fatal(err)
		}
	}
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}
