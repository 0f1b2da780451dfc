package diskio

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"path"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// The namespace of TestCrashProperties: files in the root and in d; d is the
// only directory and is never removed. Renames stay in one directory, where
// SyncDir(dir) makes exactly dir's current entries durable.
var (
	propFiles = []string{"a", "b", "c", "d/a", "d/b", "d/c"}
	propSlots = []string{"a", "b", "c", "d", "d/a", "d/b", "d/c"}
)

// mfile is the model of one file: what was written, and what was synced.
type mfile struct {
	cur, synced []byte
	// truncLow is the smallest size since the last sync.
	truncLow int
}

// validAfterCrash reports whether got may be x after a crash: no byte
// invented (each one synced or written at its place), the synced bytes all
// there unless a truncation cut them.
func (x *mfile) validAfterCrash(got []byte) bool {
	lo := min(x.truncLow, len(x.synced))
	hi := max(len(x.synced), len(x.cur))
	if len(got) < lo || len(got) > hi {
		return false
	}
	for pos, b := range got {
		if !(pos < len(x.synced) && x.synced[pos] == b) && !(pos < len(x.cur) && x.cur[pos] == b) {
			return false
		}
	}
	return true
}

// entry is the model of a directory entry: a file, the directory d, or
// nothing.
type entry struct {
	file *mfile
	dir  bool
}

func (e entry) exists() bool { return e.file != nil || e.dir }

// propMachine drives two Sims with the same ops (the second proves that
// the same ops and seed give the same disk) and a model.
type propMachine struct {
	sim, twin *Sim
	cur       map[string]entry
	durable   map[string]entry
	// hist holds the values an entry took since its directory's last sync.
	hist   map[string][]entry
	writes int
}

func newPropMachine() *propMachine {
	return &propMachine{sim: NewSim(), twin: NewSim(), cur: map[string]entry{}, durable: map[string]entry{}, hist: map[string][]entry{}}
}

func (m *propMachine) set(slot string, e entry) {
	m.cur[slot] = e
	m.hist[slot] = append(m.hist[slot], e)
}

func parentOf(p string) string { return path.Dir(p) }

func (m *propMachine) parentExists(p string) bool {
	dir := parentOf(p)
	return dir == "." || m.cur[dir].dir
}

// both runs op on the Sim and its twin, which must agree.
func (m *propMachine) both(t *rapid.T, op func(FS) error) error {
	err := op(m.sim)
	terr := op(m.twin)
	if (err == nil) != (terr == nil) {
		t.Fatalf("the twin Sims disagree: %v, %v", err, terr)
	}
	return err
}

// onFile opens p on both Sims and runs op on the file.
func (m *propMachine) onFile(t *rapid.T, p string, op func(File) error) error {
	return m.both(t, func(fs FS) error {
		f, err := fs.Open(p)
		if err != nil {
			return err
		}
		if err := op(f); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		return f.Close()
	})
}

func (m *propMachine) expect(t *rapid.T, err error, ok bool, what string) {
	if ok && err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !ok && err == nil {
		t.Fatalf("%s: succeeded, the model says it fails", what)
	}
}

func (m *propMachine) mkdir(t *rapid.T) {
	err := m.both(t, func(fs FS) error { return fs.MkdirAll("d") })
	m.expect(t, err, true, "mkdir d")
	if !m.cur["d"].dir {
		m.set("d", entry{dir: true})
	}
}

func (m *propMachine) create(t *rapid.T) {
	p := rapid.SampledFrom(propFiles).Draw(t, "path")
	err := m.both(t, func(fs FS) error {
		f, err := fs.Create(p)
		if err != nil {
			return err
		}
		return f.Close()
	})
	m.expect(t, err, m.parentExists(p), "create "+p)
	if err != nil {
		return
	}
	if x := m.cur[p].file; x != nil {
		x.cur, x.truncLow = nil, 0
		return
	}
	m.set(p, entry{file: &mfile{}})
}

// data returns n bytes no other write of the run has at the same place, and
// no zero byte, so a misplaced or invented byte shows.
func (m *propMachine) data(off, n int) []byte {
	m.writes++
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((m.writes*131+(off+i)*7)%251) + 1
	}
	return b
}

func (m *propMachine) write(t *rapid.T) {
	p := rapid.SampledFrom(propFiles).Draw(t, "path")
	off := rapid.IntRange(0, 3*pageBytes).Draw(t, "off")
	n := rapid.IntRange(0, 5000).Draw(t, "len")
	data := m.data(off, n)
	err := m.onFile(t, p, func(f File) error { _, err := f.WriteAt(data, int64(off)); return err })
	x := m.cur[p].file
	m.expect(t, err, x != nil, "write "+p)
	if x != nil {
		if end := off + n; end > len(x.cur) {
			x.cur = append(x.cur, make([]byte, end-len(x.cur))...)
		}
		copy(x.cur[off:], data)
	}
}

func (m *propMachine) resize(t *rapid.T) {
	p := rapid.SampledFrom(propFiles).Draw(t, "path")
	size := rapid.IntRange(0, 4*pageBytes).Draw(t, "size")
	prealloc := rapid.Bool().Draw(t, "preallocate")
	err := m.onFile(t, p, func(f File) error {
		if prealloc {
			return f.Preallocate(int64(size))
		}
		return f.Truncate(int64(size))
	})
	x := m.cur[p].file
	m.expect(t, err, x != nil, "resize "+p)
	switch {
	case x == nil:
	case size > len(x.cur):
		x.cur = append(x.cur, make([]byte, size-len(x.cur))...)
	case !prealloc:
		x.cur = x.cur[:size:size]
		x.truncLow = min(x.truncLow, size)
	}
}

func (m *propMachine) sync(t *rapid.T) {
	p := rapid.SampledFrom(propFiles).Draw(t, "path")
	err := m.onFile(t, p, func(f File) error { return f.Sync() })
	x := m.cur[p].file
	m.expect(t, err, x != nil, "sync "+p)
	if x != nil {
		x.synced = slices.Clone(x.cur)
		x.truncLow = len(x.cur)
	}
}

func (m *propMachine) rename(t *rapid.T) {
	dir := rapid.SampledFrom([]string{"", "d/"}).Draw(t, "dir")
	from := dir + rapid.SampledFrom([]string{"a", "b", "c"}).Draw(t, "from")
	to := dir + rapid.SampledFrom([]string{"a", "b", "c"}).Draw(t, "to")
	err := m.both(t, func(fs FS) error { return fs.Rename(from, to) })
	x := m.cur[from].file
	m.expect(t, err, x != nil, "rename "+from+" "+to)
	if x != nil && from != to {
		m.set(to, entry{file: x})
		m.set(from, entry{})
	}
}

func (m *propMachine) remove(t *rapid.T) {
	p := rapid.SampledFrom(propFiles).Draw(t, "path")
	err := m.both(t, func(fs FS) error { return fs.Remove(p) })
	m.expect(t, err, m.cur[p].file != nil, "remove "+p)
	if err == nil {
		m.set(p, entry{})
	}
}

func (m *propMachine) syncDir(t *rapid.T) {
	dir := rapid.SampledFrom([]string{".", "d"}).Draw(t, "dir")
	err := m.both(t, func(fs FS) error { return fs.SyncDir(dir) })
	m.expect(t, err, dir == "." || m.cur["d"].dir, "sync-dir "+dir)
	if err != nil {
		return
	}
	for _, slot := range propSlots {
		if parentOf(slot) == dir {
			m.durable[slot] = m.cur[slot]
			m.hist[slot] = nil
		}
	}
}

// crash crashes both Sims with one seed, checks the disk against the model
// and goes on with the model of the new disk.
func (m *propMachine) crash(t *rapid.T) {
	mode := rapid.SampledFrom([]string{"random", "keep", "drop"}).Draw(t, "mode")
	seed := rapid.Uint64().Draw(t, "seed")
	o := map[string]CrashOptions{"random": DefaultCrashOptions, "keep": CrashKeepAll, "drop": CrashDropAll}[mode]
	rng := func() *rand.Rand { return rand.New(rand.NewPCG(seed, 1)) }
	next := m.sim.CrashWith(rng(), o)
	if again := m.sim.CrashWith(rng(), o); again.Describe() != next.Describe() {
		t.Fatalf("one crash, one seed, two disks:\n%s\n%s", next.Describe(), again.Describe())
	}
	twin := m.twin.CrashWith(rng(), o)
	if twin.Describe() != next.Describe() {
		t.Fatalf("the same ops and seed gave two disks:\n%s\n%s", next.Describe(), twin.Describe())
	}
	if _, err := m.sim.Create("x"); !errors.Is(err, ErrCrashed) {
		t.Fatalf("create on a crashed Sim: %v", err)
	}
	got := readDisk(t, next)
	for _, slot := range propSlots {
		if parentOf(slot) != "." && !got["d"].dir {
			continue
		}
		g := got[slot]
		var candidates []entry
		switch mode {
		case "keep":
			candidates = []entry{m.cur[slot]}
		case "drop":
			candidates = []entry{m.durable[slot]}
		default:
			candidates = append([]entry{m.durable[slot]}, m.hist[slot]...)
		}
		if !slices.ContainsFunc(candidates, func(e entry) bool { return matches(e, g, mode) }) {
			t.Fatalf("crash mode=%s: %s is %s, none of the %d candidates; disk:\n%s", mode, slot, describeEntry(g), len(candidates), next.Describe())
		}
	}
	// Everything on the new disk is durable: dropping all that is not
	// changes nothing.
	before := next.Describe()
	next = next.CrashWith(nil, CrashDropAll)
	if next.Describe() != before {
		t.Fatalf("a crashed disk is not all durable:\n%s\n%s", before, next.Describe())
	}
	m.sim, m.twin = next, twin.CrashWith(nil, CrashDropAll)
	m.cur, m.durable, m.hist = map[string]entry{}, map[string]entry{}, map[string][]entry{}
	for slot, e := range got {
		if e.exists() {
			m.cur[slot] = e
			m.durable[slot] = e
		}
	}
}

// matches reports whether the entry read after a crash may be e.
func matches(e, got entry, mode string) bool {
	switch {
	case e.dir || got.dir:
		return e.dir == got.dir
	case e.file == nil || got.file == nil:
		return e.file == got.file
	case mode == "keep":
		return bytes.Equal(got.file.cur, e.file.cur)
	case mode == "drop":
		return bytes.Equal(got.file.cur, e.file.synced)
	}
	return e.file.validAfterCrash(got.file.cur)
}

func describeEntry(e entry) string {
	switch {
	case e.dir:
		return "a directory"
	case e.file == nil:
		return "missing"
	}
	return quote(e.file.cur)
}

// readDisk reads the namespace of the test from a Sim, as fresh model
// entries whose contents are all synced. Nothing else may be on it.
func readDisk(t *rapid.T, s *Sim) map[string]entry {
	got := map[string]entry{}
	for _, dir := range []string{".", "d"} {
		names, err := s.List(dir)
		if errors.Is(err, ErrNotExist) && dir == "d" {
			continue
		}
		if err != nil {
			t.Fatalf("list %s: %v", dir, err)
		}
		for _, name := range names {
			slot := path.Join(dir, name)
			if !slices.Contains(propSlots, slot) {
				t.Fatalf("crash invented %s", slot)
			}
			if slot == "d" {
				got[slot] = entry{dir: true}
				continue
			}
			f, err := s.Open(slot)
			if err != nil {
				t.Fatalf("open %s: %v", slot, err)
			}
			size, _ := f.Size()
			data := make([]byte, size)
			if _, err := f.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
				t.Fatalf("read %s: %v", slot, err)
			}
			f.Close()
			got[slot] = entry{file: &mfile{cur: data, synced: slices.Clone(data), truncLow: len(data)}}
		}
	}
	return got
}

// TestCrashProperties: for random op sequences and crash seeds, a crash
// never invents a byte or an entry, keeps all synced data and durable
// entries, and is a function of the ops and the seed.
func TestCrashProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := newPropMachine()
		t.Repeat(map[string]func(*rapid.T){
			"mkdir":    m.mkdir,
			"create":   m.create,
			"write":    m.write,
			"resize":   m.resize,
			"sync":     m.sync,
			"rename":   m.rename,
			"remove":   m.remove,
			"sync-dir": m.syncDir,
			"crash":    m.crash,
		})
		m.crash(t)
	})
}
