package raftlog

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/diskio"
)

// closedLog builds a log with several segments, overwrites and two
// snapshots on a simulated disk, closes it and returns the disk, stopped,
// so that CrashWith(nil, CrashDropAll) yields fresh copies of it.
func closedLog(t *testing.T) (*diskio.Sim, *runner) {
	disk := diskio.NewSim()
	opts := Options{SegmentBytes: segmentBytesMin, SnapshotsRetained: 2, EntryCacheBytes: 256}
	r := newRunner(t, 7, disk, opts)
	r.dataMax, r.snapMax = 24, 40
	if err := r.run(25); err != nil {
		t.Fatal(err)
	}
	if err := r.log.Close(); err != nil {
		t.Fatal(err)
	}
	disk.CrashWith(nil, diskio.CrashDropAll)
	return disk, r
}

// logFiles lists the WAL segments and snapshot files of the log on disk.
func logFiles(t *testing.T, disk *diskio.Sim) []string {
	var out []string
	for _, dir := range []string{envDir + "/wal", envDir + "/snap"} {
		names, err := disk.List(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if strings.HasSuffix(n, walSuffix) || strings.HasSuffix(n, snapSuffix) {
				out = append(out, dir+"/"+n)
			}
		}
	}
	return out
}

// recordsEnd is the end of the records of a segment: its seal, or its last
// record (the sync marker Close wrote).
func recordsEnd(t *testing.T, disk *diskio.Sim, name string) int64 {
	seq, first, _ := parseSegmentName(name[strings.LastIndex(name, "/")+1:])
	f, err := disk.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := scanSegment(&segment{seq: seq, first: first, name: name, f: f}, true, func(record, int64) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return res.end
}

func flipBit(t *testing.T, disk *diskio.Sim, name string, off int64, bit uint) {
	f, err := disk.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1 << bit
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestEveryBitFlipIsDetected flips, one at a time, every bit of every
// record of every segment of a cleanly closed log, and every bit of every
// snapshot file. A flip in the WAL must stop recovery with ErrCorrupt
// naming the file, except in the sync marker that ends the log, which no
// later record vouches for: recovery cuts it as a torn tail, says so, and
// loses nothing. A flip in a snapshot must stop recovery or make it fall
// back to an intact older snapshot.
func TestEveryBitFlipIsDetected(t *testing.T) {
	disk, r := closedLog(t)
	view := disk.CrashWith(nil, diskio.CrashDropAll)
	files := logFiles(t, view)
	newest := ""
	for _, n := range files {
		if strings.HasSuffix(n, walSuffix) {
			newest = n
		}
	}
	var flips, corrupt, markerCuts, fallbacks int
	for _, name := range files {
		isWAL := strings.HasSuffix(name, walSuffix)
		var end int64
		if isWAL {
			end = recordsEnd(t, view, name)
		} else {
			f, err := view.Open(name)
			if err != nil {
				t.Fatal(err)
			}
			end, _ = f.Size()
			f.Close()
		}
		for off := range end {
			for bit := range uint(8) {
				d := disk.CrashWith(nil, diskio.CrashDropAll)
				flipBit(t, d, name, off, bit)
				flips++
				core, logs := observer.New(zapcore.WarnLevel)
				opts := r.opts
				opts.Logger = zap.New(core)
				l, err := Open(d, envDir, opts)
				what := fmt.Sprintf("%s offset %d bit %d", name, off, bit)
				switch {
				case err != nil && !errors.Is(err, ErrCorrupt):
					t.Fatalf("%s: error not marked corrupt: %v", what, err)
				case err != nil && !strings.Contains(err.Error(), name):
					t.Fatalf("%s: error does not name the file: %v", what, err)
				case err != nil:
					corrupt++
				case isWAL && name == newest && off >= end-int64(recordBytes(0)):
					if logs.FilterMessage("truncating torn WAL tail").Len() != 1 {
						t.Fatalf("%s: sync marker cut without a warning", what)
					}
					if d := r.diff(l, r.cur); d != "" {
						t.Fatalf("%s: cutting the damaged sync marker lost data: %s", what, d)
					}
					markerCuts++
					l.Close()
				case isWAL:
					t.Fatalf("%s: flip in the WAL not detected; recovered:\n%s", what, describeLog(l))
				default:
					fallbacks++
					checkIntactBase(t, l, name, what)
					l.Close()
				}
			}
		}
	}
	t.Logf("%d files, %d flips: %d stopped recovery, %d cut the final sync marker, %d fell back to an older snapshot",
		len(files), flips, corrupt, markerCuts, fallbacks)
	if markerCuts != 8*recordBytes(0) {
		t.Fatalf("%d flips cut the final sync marker, want %d", markerCuts, 8*recordBytes(0))
	}
}

// checkIntactBase requires the base of a log recovered despite a flip in
// snapshot file damaged to be another snapshot, whose body reads whole.
func checkIntactBase(t *testing.T, l *Log, damaged, what string) {
	if l.base.name == damaged {
		t.Fatalf("%s: recovery uses the damaged snapshot", what)
	}
	if l.base.index() == 0 {
		return
	}
	_, body, err := l.OpenSnapshot()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	defer body.Close()
	if _, err := io.ReadAll(body); err != nil {
		t.Fatalf("%s: fallback snapshot unreadable: %v", what, err)
	}
}

// TestSnapshotHeaderFlips flips every bit before the body of snapshots
// whose headers end at every offset modulo 8, so that the padding between
// header and body, which no checksum covers, is flipped too: each flip
// must make the file corrupt.
func TestSnapshotHeaderFlips(t *testing.T) {
	fsys := diskio.NewSim()
	l := openSim(t, fsys, "a")
	if err := l.Save(hardStateP(2, 1, 20), ents(1, 21, 2, 10), true); err != nil {
		t.Fatal(err)
	}
	pads := map[int64]bool{}
	for voters := range uint64(12) {
		cs := &raftpb.ConfState{}
		for v := range voters + 1 {
			cs.Voters = append(cs.Voters, 1+v*1000)
		}
		meta := &raftpb.SnapshotMetadata{Index: new(uint64(9 + voters)), Term: new(uint64(2)), ConfState: cs}
		w, err := l.CreateSnapshot(meta)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("state")); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		names, err := fsys.List("a/snap")
		if err != nil {
			t.Fatal(err)
		}
		name := ""
		for _, n := range names {
			if idx, _, ok := parseSnapshotName(n); ok && idx == meta.GetIndex() {
				name = "a/snap/" + n
			}
		}
		sf, err := verifySnapshot(fsys, name)
		if err != nil {
			t.Fatalf("%s: intact snapshot: %v", name, err)
		}
		pads[sf.bodyOff-int64(snapHeaderFixedBytes+len(mustMarshal(t, meta))+4)] = true
		for off := range sf.bodyOff {
			for bit := range uint(8) {
				flipBit(t, fsys, name, off, bit)
				if _, err := verifySnapshot(fsys, name); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s offset %d bit %d (body at %d): %v, want ErrCorrupt", name, off, bit, sf.bodyOff, err)
				}
				flipBit(t, fsys, name, off, bit)
			}
		}
	}
	if !pads[0] || len(pads) < 4 {
		t.Fatalf("padding lengths covered: %v, want several including none", pads)
	}
}

func mustMarshal(t *testing.T, m *raftpb.SnapshotMetadata) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
