package diskio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mustT fails the test on err.
func mustT(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// durableFile returns a Sim holding name, durable, with data synced, and
// the file open.
func durableFile(t *testing.T, name string, data string) (*Sim, File) {
	t.Helper()
	s := NewSim()
	f, err := s.Create(name)
	mustT(t, err)
	_, err = f.WriteAt([]byte(data), 0)
	mustT(t, err)
	mustT(t, f.Sync())
	mustT(t, s.SyncDir("."))
	return s, f
}

func readAll(t *testing.T, f File) string {
	t.Helper()
	size, err := f.Size()
	mustT(t, err)
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return string(b)
}

// contentsAfter crashes s with o and returns the contents of name.
func contentsAfter(t *testing.T, s *Sim, o CrashOptions, name string) string {
	t.Helper()
	c := s.CrashWith(rand.New(rand.NewPCG(1, 2)), o)
	f, err := c.Open(name)
	mustT(t, err)
	return readAll(t, f)
}

func TestInjectReadEIO(t *testing.T) {
	s, f := durableFile(t, "a", "hello")
	c := NewCounter(If(Reads, Fail(syscall.EIO)))
	s.SetInjector(c)
	_, err := f.ReadAt(make([]byte, 5), 0)
	if !errors.Is(err, syscall.EIO) || !errors.Is(err, ErrInjected) {
		t.Fatalf("read: %v, want an injected EIO", err)
	}
	if got := err.Error(); got != "diskio: injected fault: read a: input/output error" {
		t.Fatalf("error text %q", got)
	}
	_, err = f.WriteAt([]byte("H"), 0)
	mustT(t, err)
	if c.Fired() != 1 {
		t.Fatalf("counter fired %d times, want 1", c.Fired())
	}
	s.SetInjector(nil)
	if got := readAll(t, f); got != "Hello" {
		t.Fatalf("after the faults: %q", got)
	}
}

func TestInjectENOSPC(t *testing.T) {
	s, f := durableFile(t, "a", "hello")
	c := NewCounter(If(Kinds(OpWrite, OpPreallocate), Fail(syscall.ENOSPC)))
	s.SetInjector(c)
	if _, err := f.WriteAt([]byte("world"), 5); !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, ErrInjected) {
		t.Fatalf("write: %v, want an injected ENOSPC", err)
	}
	if err := f.Preallocate(1 << 20); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("preallocate: %v, want ENOSPC", err)
	}
	mustT(t, f.Truncate(3))
	if c.Fired() != 2 {
		t.Fatalf("counter fired %d times, want 2", c.Fired())
	}
	// The failed ops changed nothing.
	if got := readAll(t, f); got != "hel" {
		t.Fatalf("after the faults: %q", got)
	}
}

// A failed fsync forgets the pages it did not write (Linux since 4.13): a
// retried Sync succeeds, reads still see the data, and a crash loses it.
// This is the fsyncgate trap that the FS contract forbids retrying into.
func TestInjectSyncEIOForgetsPages(t *testing.T) {
	s, f := durableFile(t, "a", "old"+strings.Repeat("-", pageBytes))
	_, err := f.WriteAt([]byte("new"), 0)
	mustT(t, err)
	s.SetInjector(If(Syncs, OnIndex(0, Fail(syscall.EIO))))
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("sync: %v, want EIO", err)
	}
	mustT(t, f.Sync())
	if got := readAll(t, f); got[:3] != "new" {
		t.Fatalf("read after the failed sync: %q", got[:3])
	}
	// A later write to another page is synced; one to the same page would
	// make the page dirty again, and it would be written whole.
	_, err = f.WriteAt([]byte("!"), pageBytes)
	mustT(t, err)
	mustT(t, f.Sync())
	got := contentsAfter(t, s, CrashKeepAll, "a")
	if got[:3] != "old" || got[pageBytes:] != "!--" {
		t.Fatalf("after the crash: %q...%q, want the failed sync's page lost and the later write kept", got[:3], got[pageBytes:])
	}
}

func TestInjectSyncDirEIO(t *testing.T) {
	s := NewSim()
	_, err := s.Create("a")
	mustT(t, err)
	s.SetInjector(If(Kinds(OpSyncDir), Fail(nil)))
	if err := s.SyncDir("."); !errors.Is(err, syscall.EIO) {
		t.Fatalf("sync-dir: %v, want EIO (the default errno)", err)
	}
	if d := s.CrashWith(nil, CrashDropAll).Describe(); d != "" {
		t.Fatalf("the failed SyncDir made entries durable:\n%s", d)
	}
}

func TestInjectBitFlip(t *testing.T) {
	s, f := durableFile(t, "a", "hello")
	c := NewCounter(If(Reads, OnIndex(0, InjectorFunc(func(Op) Fault {
		return Fault{Kind: FaultBitFlip, Bit: 8*1 + 0} // 'e' ^ 1 = 'd'
	}))))
	s.SetInjector(c)
	if got := readAll(t, f); got != "hdllo" {
		t.Fatalf("read with the flip: %q", got)
	}
	// The flip is in the stored byte: later reads and a crash keep it.
	if got := readAll(t, f); got != "hdllo" {
		t.Fatalf("read after the flip: %q", got)
	}
	if c.Fired() != 1 {
		t.Fatalf("counter fired %d times, want 1", c.Fired())
	}
	if got := contentsAfter(t, s, CrashDropAll, "a"); got != "hdllo" {
		t.Fatalf("after a crash: %q, want the rot to be durable", got)
	}

	// Rot in unsynced data does not reach the synced copy.
	s, f = durableFile(t, "a", "hello")
	_, err := f.WriteAt([]byte("HELLO"), 0)
	mustT(t, err)
	s.SetInjector(If(Reads, OnIndex(0, FlipBit(rand.New(rand.NewPCG(3, 4))))))
	got := readAll(t, f)
	if diff := bitsDiffer(got, "HELLO"); diff != 1 {
		t.Fatalf("FlipBit changed %d bits: %q", diff, got)
	}
	if got := contentsAfter(t, s, CrashDropAll, "a"); got != "hello" {
		t.Fatalf("after a crash dropping the write: %q", got)
	}

	// Rewriting the byte heals it, as rewriting a bad sector does.
	s, f = durableFile(t, "a", "hello")
	s.SetInjector(If(Reads, OnIndex(0, FlipBit(rand.New(rand.NewPCG(5, 6))))))
	readAll(t, f)
	_, err = f.WriteAt([]byte("hello"), 0)
	mustT(t, err)
	if got := readAll(t, f); got != "hello" {
		t.Fatalf("after the rewrite: %q", got)
	}
}

func bitsDiffer(a, b string) int {
	n := 0
	for i := range a {
		n += bits.OnesCount8(a[i] ^ b[i])
	}
	return n
}

func TestInjectMisdirect(t *testing.T) {
	s, f := durableFile(t, "a", strings.Repeat("o", 2*pageBytes))
	s.SetInjector(If(Writes, OnIndex(0, InjectorFunc(func(Op) Fault {
		return Fault{Kind: FaultMisdirect, Offset: 0}
	}))))
	n, err := f.WriteAt([]byte("new"), pageBytes)
	if n != 3 || err != nil {
		t.Fatalf("misdirected write: %d, %v; want a success", n, err)
	}
	got := readAll(t, f)
	if got[:3] != "new" || got[pageBytes:pageBytes+3] != "ooo" {
		t.Fatalf("misdirected write landed wrong: [0,3)=%q [%d,+3)=%q", got[:3], pageBytes, got[pageBytes:pageBytes+3])
	}

	// Past the end, the size grows as intended; the data lands elsewhere.
	s.SetInjector(If(Writes, OnIndex(0, InjectorFunc(func(Op) Fault {
		return Fault{Kind: FaultMisdirect, Offset: 512}
	}))))
	_, err = f.WriteAt([]byte("tail"), 3*pageBytes)
	mustT(t, err)
	got = readAll(t, f)
	if len(got) != 3*pageBytes+4 || got[512:516] != "tail" || got[3*pageBytes:] != "\x00\x00\x00\x00" {
		t.Fatalf("misdirected append: size %d, [512,516)=%q, tail %q", len(got), got[512:516], got[3*pageBytes:])
	}

	// Misdirect draws a sector-aligned offset other than the intended one.
	inj := Misdirect(rand.New(rand.NewPCG(7, 8)))
	for i := range 1000 {
		op := Op{Kind: OpWrite, Path: "a", Offset: int64(i%8) * sectorBytes, Len: 100}
		f := inj.Inject(op)
		if f.Kind != FaultMisdirect || f.Offset == op.Offset || f.Offset%sectorBytes != 0 || f.Offset > op.Offset+int64(op.Len)+sectorBytes {
			t.Fatalf("Misdirect(%v) = %+v", op, f)
		}
	}
	if f := inj.Inject(Op{Kind: OpRead, Len: 10}); !f.IsZero() {
		t.Fatalf("Misdirect on a read: %+v", f)
	}
}

func TestInjectLatency(t *testing.T) {
	s, f := durableFile(t, "a", "x")
	s.SetInjector(Any(If(Kinds(OpSync), Slow(3*time.Millisecond)), If(Writes, Slow(time.Millisecond))))
	mustT(t, f.Sync())
	mustT(t, f.Sync())
	_, err := f.WriteAt([]byte("y"), 0)
	mustT(t, err)
	if d := s.TakeLatency(); d != 7*time.Millisecond {
		t.Fatalf("latency %v, want 7ms", d)
	}
	if d := s.TakeLatency(); d != 0 {
		t.Fatalf("latency taken twice: %v", d)
	}
	// Latency comes with a fault too.
	s.SetInjector(InjectorFunc(func(Op) Fault {
		return Fault{Kind: FaultError, Err: syscall.EIO, Latency: time.Second}
	}))
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("sync: %v", err)
	}
	if d := s.TakeLatency(); d != time.Second {
		t.Fatalf("latency of a failed op %v", d)
	}
}

// commitWorkload replaces the contents of "commit" atomically, the way
// raftlog publishes a snapshot: write a temporary file, sync it, rename it
// over the old one, sync the directory. It stops at the first error.
func commitWorkload(fs FS, rounds int) error {
	if err := fs.MkdirAll("db"); err != nil {
		return err
	}
	if err := fs.SyncDir("."); err != nil {
		return err
	}
	for i := range rounds {
		f, err := fs.Create("db/commit.tmp")
		if err != nil {
			return err
		}
		data := bytes.Repeat([]byte{byte('a' + i)}, 3000+1000*i)
		if _, err := f.WriteAt(data, 0); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		if err := fs.Rename("db/commit.tmp", "db/commit"); err != nil {
			return err
		}
		if err := fs.SyncDir("db"); err != nil {
			return err
		}
	}
	return nil
}

// TestCrashAtEveryMutation is the crash-at-the-k-th-op loop of a raftlog
// crash test: for every k, stop the disk at the k-th mutating op, crash it
// several ways, and require that "commit" is absent or whole.
func TestCrashAtEveryMutation(t *testing.T) {
	const rounds = 3
	clean := NewSim()
	mustT(t, commitWorkload(clean, rounds))
	total := clean.Mutations()
	if total != 2+rounds*5 {
		t.Fatalf("the workload made %d mutations, want %d", total, 2+rounds*5)
	}
	if clean.Count(OpWrite) != rounds || clean.Count(OpSync, OpSyncDir) != 1+2*rounds {
		t.Fatalf("op counts: %d writes, %d syncs", clean.Count(OpWrite), clean.Count(OpSync, OpSyncDir))
	}
	for k := range total + 1 {
		s := NewSim()
		c := NewCounter(If(Mutating, OnIndex(k, CrashNow())))
		s.SetInjector(c)
		err := commitWorkload(s, rounds)
		if k == total {
			if err != nil || c.Fired() != 0 {
				t.Fatalf("k=%d: %v, fired %d", k, err, c.Fired())
			}
			continue
		}
		if !errors.Is(err, ErrCrashed) || !errors.Is(err, ErrInjected) || c.Fired() != 1 || !s.Crashed() {
			t.Fatalf("k=%d: %v, fired %d", k, err, c.Fired())
		}
		if _, err := s.List("."); !errors.Is(err, ErrCrashed) {
			t.Fatalf("k=%d: list after the crash: %v", k, err)
		}
		for seed := range uint64(20) {
			d := s.Crash(rand.New(rand.NewPCG(seed, uint64(k))))
			f, err := d.Open("db/commit")
			if errors.Is(err, ErrNotExist) {
				continue
			}
			mustT(t, err)
			got := readAll(t, f)
			if len(got) == 0 || got != strings.Repeat(got[:1], len(got)) || len(got) != 3000+1000*int(got[0]-'a') {
				t.Fatalf("k=%d seed=%d: commit is torn: %s", k, seed, quote([]byte(got)))
			}
		}
	}
}

// A rename survives whole: across many crashes of a chain of renames, the
// file is at exactly one of its names. (Had d not been made durable, a
// crash could lose the file with d: a rename into it survives without it.)
func TestCrashRenameAtomic(t *testing.T) {
	s, f := durableFile(t, "a", "X")
	mustT(t, f.Close())
	mustT(t, s.MkdirAll("d"))
	mustT(t, s.SyncDir("."))
	for _, r := range [][2]string{{"a", "b"}, {"b", "d/c"}, {"d/c", "a"}, {"a", "e"}} {
		mustT(t, s.Rename(r[0], r[1]))
	}
	seen := map[string]int{}
	for seed := range uint64(500) {
		d := s.Crash(rand.New(rand.NewPCG(seed, 0)))
		var at []string
		for _, name := range []string{"a", "b", "d/c", "e"} {
			if _, err := d.Open(name); err == nil {
				at = append(at, name)
			}
		}
		if len(at) != 1 {
			t.Fatalf("seed %d: the file is at %v:\n%s", seed, at, d.Describe())
		}
		seen[at[0]]++
	}
	for _, name := range []string{"a", "b", "d/c", "e"} {
		if seen[name] == 0 {
			t.Errorf("no crash left the file at %s: %v", name, seen)
		}
	}
}

func TestPredicates(t *testing.T) {
	for _, c := range []struct {
		p    Predicate
		op   Op
		want bool
	}{
		{PathMatch("*.wal"), Op{Path: "member/wal/0001.wal"}, true},
		{PathMatch("*.wal"), Op{Path: "member/wal/0001.walx"}, false},
		{PathMatch("wal/*.wal"), Op{Path: "wal/1.wal"}, true},
		{PathMatch("wal/*.wal"), Op{Path: "snap/1.wal"}, false},
		{Kinds(OpSync, OpWrite), Op{Kind: OpWrite}, true},
		{Kinds(OpSync, OpWrite), Op{Kind: OpRead}, false},
		{And(Writes, PathMatch("a")), Op{Kind: OpWrite, Path: "a"}, true},
		{And(Writes, PathMatch("a")), Op{Kind: OpWrite, Path: "b"}, false},
		{Or(Reads, Writes), Op{Kind: OpRead}, true},
		{Or(Reads, Writes), Op{Kind: OpSync}, false},
		{Not(Reads), Op{Kind: OpRead}, false},
		{Syncs, Op{Kind: OpSyncDir}, true},
		{Mutating, Op{Kind: OpLock}, true},
		{Mutating, Op{Kind: OpStat}, false},
	} {
		if got := c.p(c.op); got != c.want {
			t.Errorf("predicate #%v on %v = %v, want %v", c.p, c.op, got, c.want)
		}
	}
}

func TestOnIndexAndAny(t *testing.T) {
	var consulted int
	second := InjectorFunc(func(Op) Fault { consulted++; return Fault{Latency: 1} })
	inj := Any(OnIndex(2, Fail(syscall.EIO)), second)
	var got []string
	for range 5 {
		f := inj.Inject(Op{})
		got = append(got, fmt.Sprint(f.Kind))
	}
	if strings.Join(got, " ") != "0 0 1 0 0" || consulted != 4 {
		t.Fatalf("kinds %v, second consulted %d times; want the EIO at index 2 only and the second injector skipped then", got, consulted)
	}
}

func TestRandomly(t *testing.T) {
	const ops = 10_000
	for _, c := range []struct {
		ppm    uint32
		lo, hi int
	}{{0, 0, 0}, {ppmMax, ops, ops}, {250_000, 2_300, 2_700}, {1_000, 2, 25}} {
		cnt := NewCounter(Randomly(c.ppm, rand.New(rand.NewPCG(9, 10)), Fail(syscall.EIO)))
		for range ops {
			cnt.Inject(Op{Kind: OpRead})
		}
		if n := int(cnt.Fired()); n < c.lo || n > c.hi {
			t.Errorf("Randomly(%d ppm) fired %d times in %d, want [%d, %d]", c.ppm, n, ops, c.lo, c.hi)
		}
	}
}

func TestInjectorMisuse(t *testing.T) {
	s, f := durableFile(t, "a", "x")
	s.SetInjector(InjectorFunc(func(Op) Fault { return Fault{Kind: FaultBitFlip} }))
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "bit flip for write") {
			t.Fatalf("a bit flip on a write: recovered %v", r)
		}
	}()
	_, _ = f.WriteAt([]byte("y"), 0)
}

func TestLockSim(t *testing.T) {
	s := NewSim()
	l, err := s.Lock("LOCK")
	mustT(t, err)
	if _, err := s.Lock("/LOCK"); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: %v", err)
	}
	mustT(t, l.Close())
	l, err = s.Lock("LOCK")
	mustT(t, err)
	// The crashed disk's lock is dead; the new disk has none.
	d := s.CrashWith(nil, CrashKeepAll)
	if err := l.Close(); !errors.Is(err, ErrCrashed) {
		t.Fatalf("close of a lock on a crashed disk: %v", err)
	}
	_, err = d.Lock("LOCK")
	mustT(t, err)
}

// A disk stopped at a Sync still holds the pending pages: the crash, not
// the stop, decides what survives.
func TestCrashNowAtSyncKeepsPendingPages(t *testing.T) {
	s, f := durableFile(t, "a", "old")
	_, err := f.WriteAt([]byte("new"), 0)
	mustT(t, err)
	s.SetInjector(If(Syncs, CrashNow()))
	if err := f.Sync(); !errors.Is(err, ErrCrashed) {
		t.Fatalf("sync: %v, want ErrCrashed", err)
	}
	if got := contentsAfter(t, s, CrashKeepAll, "a"); got != "new" {
		t.Fatalf("kept after the crash: %q", got)
	}
	if got := contentsAfter(t, s, CrashDropAll, "a"); got != "old" {
		t.Fatalf("dropped after the crash: %q", got)
	}
}
