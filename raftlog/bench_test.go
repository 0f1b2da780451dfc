package raftlog

import (
	"fmt"
	"testing"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/basaltdb/basalt/diskio"
)

const benchDataBytes = 128

// BenchmarkSave measures one Ready persisted with its fsync, on the real
// disk, at 1, 16 and 256 entries of 128 bytes per batch. MB/s counts entry
// data; entries/s and fsyncs/s are reported too.
func BenchmarkSave(b *testing.B) {
	for _, batch := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("entries=%d", batch), func(b *testing.B) {
			l, err := Open(diskio.OS, b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			batches := make([][]*raftpb.Entry, b.N)
			for i := range batches {
				batches[i] = ents(uint64(i*batch+1), uint64((i+1)*batch+1), 1, benchDataBytes)
			}
			hs := hardStateP(1, 1, 0)
			b.SetBytes(int64(batch * benchDataBytes))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if err := l.Save(hs, batches[i], true); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			s := b.Elapsed().Seconds()
			b.ReportMetric(float64(b.N*batch)/s, "entries/s")
			b.ReportMetric(float64(b.N)/s, "fsyncs/s")
		})
	}
}

// BenchmarkRestart measures a restart with a million 64-byte entries
// after the snapshot: Open (recovery scans and checks every record) and
// then reading every entry back through Entries, as the engine does to
// rebuild its state.
func BenchmarkRestart(b *testing.B) {
	const n, batch = 1 << 20, 1024
	dir := b.TempDir()
	l, err := Open(diskio.OS, dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	for i := uint64(1); i <= n; i += batch {
		if err := l.Save(hardStateP(1, 1, i+batch-1), ents(i, i+batch, 1, 64), i+batch > n); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		l, err := Open(diskio.OS, dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		read := 0
		for lo := uint64(1); lo <= n; {
			es, err := l.Entries(lo, n+1, 64<<20)
			if err != nil {
				b.Fatal(err)
			}
			read += len(es)
			lo += uint64(len(es))
		}
		if read != n {
			b.Fatalf("read %d entries, want %d", read, n)
		}
		b.StopTimer()
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}
