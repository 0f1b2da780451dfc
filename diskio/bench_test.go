package diskio

import (
	"math/rand/v2"
	"testing"
)

// benchAppendSync appends 4 KiB records and syncs each, starting a new
// file every 16 MiB, as a WAL does.
func benchAppendSync(b *testing.B, fs FS, dir string) {
	const segmentBytes = 16 << 20
	rec := make([]byte, 4096)
	var f File
	var off int64
	b.SetBytes(int64(len(rec)))
	for i := 0; b.Loop(); i++ {
		if f == nil || off >= segmentBytes {
			if f != nil {
				f.Close()
			}
			var err error
			if f, err = fs.Create(dir + "/seg"); err != nil {
				b.Fatal(err)
			}
			off = 0
		}
		if _, err := f.WriteAt(rec, off); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		off += int64(len(rec))
	}
	f.Close()
}

func BenchmarkAppendSync(b *testing.B) {
	b.Run("sim", func(b *testing.B) { benchAppendSync(b, NewSim(), "") })
	b.Run("os", func(b *testing.B) { benchAppendSync(b, OS, b.TempDir()) })
}

// BenchmarkCrash crashes a disk holding a 16 MiB file with 1 MiB unsynced.
func BenchmarkCrash(b *testing.B) {
	s := NewSim()
	f, _ := s.Create("seg")
	s.SyncDir(".")
	f.WriteAt(make([]byte, 15<<20), 0)
	f.Sync()
	f.WriteAt(make([]byte, 1<<20), 15<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for b.Loop() {
		s.Crash(rng)
	}
}
