package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

func mustPut(s *Store, key, value string) {
	txn := s.Begin()
	txn.Put([]byte(key), []byte(value), 0, false)
	txn.End()
}

// TestSortMatchesEtcd checks results against what etcd v3.7.3 answered for the same writes:
// the order of ties is sort.Sort's on the key-ordered input, and a sort asked with SortNone only
// reorders the first Limit+1 keys.
func TestSortMatchesEtcd(t *testing.T) {
	s := New()
	for i := range 30 {
		mustPut(s, fmt.Sprintf("k%02d", i*7%30), fmt.Sprintf("v%d", i%3))
	}
	for _, c := range []struct {
		opts RangeOptions
		want string
	}{
		{RangeOptions{SortOrder: SortAscend, SortTarget: SortByValue},
			"k12 k27 k24 k03 k21 k18 k06 k00 k15 k09 k07 k04 k10 k13 k28 k01 k16 k25 k22 k19 k08 k20 k05 k23 k02 k17 k26 k11 k14 k29"},
		{RangeOptions{SortOrder: SortDescend, SortTarget: SortByValue},
			"k11 k29 k02 k26 k23 k05 k20 k17 k08 k14 k07 k04 k01 k13 k28 k25 k16 k10 k22 k19 k06 k21 k18 k00 k24 k15 k03 k27 k09 k12"},
		{RangeOptions{SortOrder: SortDescend, SortTarget: SortByCreate},
			"k23 k16 k09 k02 k25 k18 k11 k04 k27 k20 k13 k06 k29 k22 k15 k08 k01 k24 k17 k10 k03 k26 k19 k12 k05 k28 k21 k14 k07 k00"},
		{RangeOptions{SortTarget: SortByValue, Limit: 5}, "k00 k03 k01 k04 k02"},
	} {
		res, err := s.View().Range([]byte("k"), []byte("l"), c.opts)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, kv := range res.KVs {
			keys = append(keys, string(kv.Key))
		}
		if got := strings.Join(keys, " "); got != c.want {
			t.Errorf("%+v:\ngot  %s\nwant %s (etcd v3.7.3)", c.opts, got, c.want)
		}
	}
}

func sampleStore(t *testing.T) *Store {
	s := New()
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 400 {
		txn := s.Begin()
		k := []byte(fmt.Sprintf("key%02d", rng.IntN(40)))
		switch rng.IntN(5) {
		case 0:
			txn.DeleteRange(k, []byte(fmt.Sprintf("key%02d", rng.IntN(40))))
		default:
			txn.Put(k, bytes.Repeat([]byte{byte(i)}, rng.IntN(2000)), int64(rng.IntN(3)), false)
		}
		txn.End()
	}
	if err := s.Compact(200); err != nil {
		t.Fatal(err)
	}
	s.CompactStep(40)
	return s
}

// Every damaged or truncated stream fails with ErrCorrupt and never panics; a good stream is read
// exactly to its end.
func TestRestoreCorrupt(t *testing.T) {
	var buf bytes.Buffer
	if _, err := sampleStore(t).View().WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	if len(good) < 2*snapshotFrameBytesMax {
		t.Fatalf("sample snapshot has %d bytes; want several frames", len(good))
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 2000 {
		bad := bytes.Clone(good)
		i := rng.IntN(len(bad))
		bad[i] ^= byte(1 + rng.IntN(255))
		if _, err := Restore(bytes.NewReader(bad)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	for _, n := range []int{0, 5, 12, 13, 100, snapshotFrameBytesMax, snapshotFrameBytesMax + 8, len(good) - 8, len(good) - 1} {
		if _, err := Restore(bytes.NewReader(good[:n])); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d of %d: %v", n, len(good), err)
		}
	}
	for range 200 {
		n := rng.IntN(len(good))
		if _, err := Restore(bytes.NewReader(good[:n])); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d of %d: %v", n, len(good), err)
		}
	}
	// A dropped frame is caught by the chained CRC even though every frame is intact.
	dropped := append(bytes.Clone(good[:12]), good[12+8+snapshotFrameBytesMax:]...)
	if _, err := Restore(bytes.NewReader(dropped)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("dropped frame: %v", err)
	}
	// Trailing data belongs to the caller.
	r := bytes.NewReader(append(bytes.Clone(good), "tail"...))
	if _, err := Restore(r); err != nil {
		t.Fatal(err)
	}
	if rest, _ := io.ReadAll(r); string(rest) != "tail" {
		t.Fatalf("Restore consumed trailing data; left %q", rest)
	}
	// A read error is reported as itself, not as corruption.
	ioErr := errors.New("disk on fire")
	_, err := Restore(io.MultiReader(bytes.NewReader(good[:100]), &failReader{ioErr}))
	if !errors.Is(err, ioErr) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("read error: %v", err)
	}
}

type failReader struct{ err error }

func (f *failReader) Read([]byte) (int, error) { return 0, f.err }

// A WriteTo error is returned, and the byte count is what reached the writer.
func TestWriteToError(t *testing.T) {
	w := &limitWriter{n: 1000}
	n, err := sampleStore(t).View().WriteTo(w)
	if err == nil || n != 1000 {
		t.Fatalf("WriteTo = %d, %v", n, err)
	}
}

type limitWriter struct{ n int }

func (w *limitWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		k := w.n
		w.n = 0
		return k, io.ErrShortWrite
	}
	w.n -= len(p)
	return len(p), nil
}

// Bytes accounts physical retention: once compaction is done it equals a restored copy's plus
// what compaction keeps beyond the logical state, the changes at the compaction revision that a
// read there does not see (tombstones).
func TestBytes(t *testing.T) {
	s := sampleStore(t)
	before := s.Bytes()
	for !s.CompactStep(100) {
	}
	if s.Bytes() >= before {
		t.Fatalf("compaction did not reduce Bytes: %d -> %d", before, s.Bytes())
	}
	var buf bytes.Buffer
	if _, err := s.View().WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	r, err := Restore(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var extra int64
	s.st.visitAll("", func(ki *keyIndex) bool {
		vs := ki.carried(s.st.compactRev, s.st.rev)
		if len(vs) == 0 {
			extra += keyOverheadBytes + int64(len(ki.key))
		}
		vers := ki.versions()
		for i := range len(vers) - len(vs) {
			extra += versionOverheadBytes + int64(vers[i].val.n)
		}
		return true
	})
	if r.Bytes()+extra != s.Bytes() {
		t.Fatalf("Bytes %d, restored %d + %d held at the compaction revision", s.Bytes(), r.Bytes(), extra)
	}
}

// Views are read from other goroutines while the writer keeps writing and compacting; run with
// -race. Each reader checks that its view keeps answering exactly as when it was taken.
func TestViewConcurrentReads(t *testing.T) {
	s := New()
	for i := range 2000 {
		mustPut(s, fmt.Sprintf("k%04d", i), "v0")
	}
	var wg sync.WaitGroup
	for round := range 20 {
		v := s.View()
		want, err := v.Range([]byte("k"), []byte("l"), RangeOptions{Limit: 50})
		if err != nil {
			t.Fatal(err)
		}
		wantHash, _, _ := v.HashKV(0)
		wg.Go(func() {
			for range 20 {
				got, err := v.Range([]byte("k"), []byte("l"), RangeOptions{Limit: 50})
				if err != nil || got.Count != want.Count || len(got.KVs) != len(want.KVs) ||
					string(got.KVs[7].Value) != string(want.KVs[7].Value) {
					t.Errorf("view at %d changed", v.Rev())
					return
				}
				if h, _, _ := v.HashKV(0); h != wantHash {
					t.Errorf("view at %d: hash changed", v.Rev())
					return
				}
			}
		})
		for i := range 300 {
			txn := s.Begin()
			k := []byte(fmt.Sprintf("k%04d", (i*7+round)%2000))
			if i%10 == 0 {
				txn.DeleteRange(k, nil)
			} else {
				txn.Put(k, []byte(fmt.Sprintf("v%d", round+1)), 0, false)
			}
			txn.End()
		}
		if round%5 == 4 {
			if err := s.Compact(s.Rev() - 100); err != nil {
				t.Fatal(err)
			}
		}
		s.CompactStep(500)
	}
	wg.Wait()
}

// The hot paths keep their allocation counts (see the benchmarks).
func TestHotPathAllocs(t *testing.T) {
	s := New()
	for i := range 1000 {
		mustPut(s, fmt.Sprintf("k%04d", i), "value")
	}
	key, val := []byte("k0500"), []byte("value2")
	put := testing.AllocsPerRun(1000, func() {
		txn := s.Begin()
		txn.Put(key, val, 0, false)
		txn.End()
	})
	// The event (+ amortized growth of the key's versions and value segments).
	if put > 1.1 {
		t.Errorf("overwrite Put: %.2f allocs, want <= 1", put)
	}
	v := s.View()
	get := testing.AllocsPerRun(1000, func() {
		if _, err := v.Range(key, nil, RangeOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	if get > 1 {
		t.Errorf("single-key Range: %.2f allocs, want 1", get)
	}
	view := testing.AllocsPerRun(1000, func() { s.View() })
	if view != 0 {
		t.Errorf("View with no change since the last one: %.2f allocs, want 0", view)
	}
}

// A key written many times keeps its values in a few segments, and once compaction leaves it
// one value the segments shrink to about that value, while a View taken before the compaction
// still reads the old values.
func TestValueSegments(t *testing.T) {
	s := New()
	value := func(i int) string { return fmt.Sprintf("%0256d", i) }
	for i := range 1000 {
		mustPut(s, "hot", value(i))
	}
	ki := s.keys["hot"]
	// Doubling from 256 bytes to 64 KiB takes 9 segments; then 4 full ones hold the rest.
	if n := len(ki.data.Load().segs); n > 13 {
		t.Errorf("1000 values of 256 bytes in %d segments, want at most 13", n)
	}
	old := s.View()
	oldRev := old.Rev()
	if err := s.Compact(s.Rev()); err != nil {
		t.Fatal(err)
	}
	for !s.CompactStep(1 << 20) {
	}
	if err := checkInvariants(s); err != nil {
		t.Fatal(err)
	}
	held := 0
	for _, seg := range s.keys["hot"].data.Load().segs {
		held += len(seg)
	}
	if held > 2*256 {
		t.Errorf("one retained value of 256 bytes holds %d bytes of segments", held)
	}
	got, err := s.View().Range([]byte("hot"), nil, RangeOptions{})
	if err != nil || len(got.KVs) != 1 || string(got.KVs[0].Value) != value(999) {
		t.Fatalf("after compaction: %v %v, want the newest value", got.KVs, err)
	}
	for i := range 1000 {
		r, err := old.Range([]byte("hot"), nil, RangeOptions{Rev: oldRev - 999 + int64(i)})
		if err != nil || len(r.KVs) != 1 || string(r.KVs[0].Value) != value(i) {
			t.Fatalf("the View from before the compaction at revision %d: %v %v", oldRev-999+int64(i), r.KVs, err)
		}
	}
}

// Restore checks the content, not only the checksums: a well-framed stream of an impossible
// state is rejected. The states are made by tampering with a store's internals.
func TestRestoreRejectsInconsistent(t *testing.T) {
	build := func() *Store {
		s := New()
		mustPut(s, "a", "1")
		mustPut(s, "b", "1")
		mustPut(s, "a", "2")
		txn := s.Begin()
		txn.DeleteRange([]byte("b"), nil)
		txn.End()
		return s
	}
	tamper := []struct {
		name string
		f    func(s *Store)
	}{
		{"a key vanishes (history gap)", func(s *Store) { s.st.live.Delete("a") }},
		{"version count skips", func(s *Store) {
			ki, _ := s.st.live.Get("a")
			ki.versions()[1].ver = 7
		}},
		{"create revision drifts", func(s *Store) {
			ki, _ := s.st.live.Get("a")
			ki.versions()[1].create = 3
		}},
		{"revisions out of order", func(s *Store) {
			ki, _ := s.st.live.Get("a")
			vers := ki.versions()
			vers[0], vers[1] = vers[1], vers[0]
		}},
		{"tombstone with a value", func(s *Store) {
			ki, _ := s.st.dead.Get("b")
			ki.versions()[1].val = ki.versions()[0].val
		}},
		{"compact revision beyond the store's", func(s *Store) { s.st.compactRev = 9 }},
		{"history shorter than the store", func(s *Store) { s.st.rev = 6 }},
	}
	for _, tc := range tamper {
		s := build()
		tc.f(s)
		s.view = nil
		var buf bytes.Buffer
		if _, err := s.View().WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		if _, err := Restore(&buf); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Restore = %v, want ErrCorrupt", tc.name, err)
		}
	}
}

// Histories longer than a chunk: old Views keep replaying exactly the events End returned, while
// the store compacts and drops whole chunks.
func TestHistoryChunks(t *testing.T) {
	s := New()
	var all []string // all[r] lists revision r's events as End returned them.
	all = append(all, "", "")
	type saved struct {
		v       *View
		compact int64
	}
	var views []saved
	for i := range 5 * histChunkEntries {
		txn := s.Begin()
		txn.Put([]byte(fmt.Sprintf("k%d", i%37)), []byte(fmt.Sprint(i)), 0, false)
		if i%5 == 0 {
			txn.DeleteRange([]byte(fmt.Sprintf("k%d", (i+3)%37)), nil)
		}
		all = append(all, fmtEvents(txn.End()))
		if i%97 == 0 {
			views = append(views, saved{s.View(), s.CompactRev()})
		}
		if i%300 == 299 {
			if err := s.Compact(s.Rev() - 50); err != nil {
				t.Fatal(err)
			}
		}
		s.CompactStep(7)
		if err := checkInvariants(s); err != nil {
			t.Fatalf("after revision %d: %v", s.Rev(), err)
		}
	}
	for !s.CompactStep(100) {
	}
	if err := checkInvariants(s); err != nil {
		t.Fatal(err)
	}
	views = append(views, saved{s.View(), s.CompactRev()})
	for _, sv := range views {
		from := sv.compact + 1
		for from <= sv.v.Rev() {
			evs, next, err := sv.v.Events(from, 10)
			if err != nil || next <= from {
				t.Fatalf("view at %d: Events(%d) = next %d, %v", sv.v.Rev(), from, next, err)
			}
			var want string
			for r := from; r < next; r++ {
				want += all[r]
			}
			if got := fmtEvents(evs); got != want {
				t.Fatalf("view at %d: Events(%d):\n%s\nwant\n%s", sv.v.Rev(), from, got, want)
			}
			from = next
		}
	}
}
