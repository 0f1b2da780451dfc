package diskio

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
)

// CrashOptions set the odds of what survives a crash, in parts per million.
type CrashOptions struct {
	// PageKeepPPM is the probability that a dirty page survives whole.
	PageKeepPPM uint32
	// PageTornPPM is the probability that a dirty page is torn: a prefix of
	// 1 to sectorsPerPage-1 sectors, drawn uniformly, survives and the rest
	// keeps its synced bytes. The other dirty pages are dropped.
	// Invariant: PageKeepPPM + PageTornPPM <= 1e6.
	PageTornPPM uint32
	// MetaKeepPPM is the probability that one unsynced metadata change
	// survives: a directory op (see dirOp) or a file's truncation below its
	// synced size.
	MetaKeepPPM uint32
}

// The CrashOptions of tests that want one known outcome: CrashDropAll keeps
// only what was made durable, CrashKeepAll keeps everything written (as if
// the caches were flushed just before the power cut). Neither draws from
// the rng, which may be nil.
var (
	CrashDropAll = CrashOptions{}
	CrashKeepAll = CrashOptions{PageKeepPPM: ppmMax, MetaKeepPPM: ppmMax}
)

// DefaultCrashOptions keep, tear and drop a dirty page with equal odds, and
// keep half of the metadata changes.
var DefaultCrashOptions = CrashOptions{PageKeepPPM: 333_333, PageTornPPM: 333_333, MetaKeepPPM: 500_000}

// Crash is CrashWith(rng, DefaultCrashOptions).
func (s *Sim) Crash(rng *rand.Rand) *Sim { return s.CrashWith(rng, DefaultCrashOptions) }

// CrashWith stops s (every later op on s or on its open files fails with
// ErrCrashed) and returns a new, independent Sim holding one possible state
// of the disk after a power cut, drawn from rng. It may be called again on
// the stopped s for other outcomes of the same crash.
//
// The model:
//   - Synced data and durable directory entries always survive.
//   - Each pending directory op (create, remove, rename, mkdir) survives
//     with MetaKeepPPM, whole, and only if the ops it depends on survive
//     (see dirOp.deps). POSIX promises nothing for entries not synced by
//     SyncDir; this explores the subsets in which each entry's changes
//     survive in order and each rename whole, as a journal commits them.
//     Entries of a directory whose own entry is lost are lost with it, even
//     when that directory was synced: a file renamed into a new directory
//     whose parent was never synced can vanish.
//   - A file's truncation below its synced size survives with MetaKeepPPM;
//     the bytes it cut off that no surviving page covers are gone.
//   - Each dirty page of a file is kept, torn (a prefix of 512-byte
//     sectors kept) or dropped (its synced bytes kept), independently.
//   - The file's size ends at the first byte past the synced size (or the
//     surviving truncation) that no surviving page holds, so a lost page
//     cuts the unsynced tail there, as ordered-data journals do: a crash
//     never invents bytes, and every byte of a file after the crash was
//     synced there or written there (zeros included, for sizes extended by
//     Truncate or Preallocate).
//   - A page whose Sync failed is not dirty any more (fsyncgate): its
//     unsynced bytes are lost.
//
// In the new Sim everything is durable, no lock is held and no injector is
// set.
func (s *Sim) CrashWith(rng *rand.Rand, o CrashOptions) *Sim {
	if o.PageKeepPPM > ppmMax || o.PageTornPPM > ppmMax-o.PageKeepPPM || o.MetaKeepPPM > ppmMax {
		panic(fmt.Sprintf("diskio: CrashOptions %+v: probabilities over %d ppm", o, ppmMax))
	}
	s.crashed = true
	c := crash{rng: rng, o: o, entries: make(map[*node]map[string]*node), files: make(map[*node]*node), dirs: make(map[*node]bool)}
	survived := make(map[*dirOp]bool)
	for _, op := range s.pending {
		ok := true
		for _, dep := range op.deps {
			ok = ok && (dep.durable || survived[dep])
		}
		if !ok || !chance(rng, o.MetaKeepPPM) {
			continue
		}
		survived[op] = true
		for _, ch := range op.changes {
			ents := c.entriesOf(ch.dir)
			if ch.target == nil {
				delete(ents, ch.name)
			} else {
				ents[ch.name] = ch.target
			}
		}
	}
	return &Sim{root: c.copyDir(s.root), locked: make(map[*node]bool)}
}

// crash builds the disk after one crash.
type crash struct {
	rng *rand.Rand
	o   CrashOptions
	// entries holds the surviving entries of the directories that have
	// surviving pending changes; the others keep their synced entries.
	entries map[*node]map[string]*node
	// files maps each surviving file of the old disk to its new copy, so a
	// file is resolved once.
	files map[*node]*node
	// dirs holds the directories of the old disk already copied.
	dirs map[*node]bool
}

func (c *crash) entriesOf(d *node) map[string]*node {
	ents := c.entries[d]
	if ents == nil {
		ents = maps.Clone(d.dir.synced)
		c.entries[d] = ents
	}
	return ents
}

// copyDir copies the surviving tree under d, in name order so that the
// draws from the rng do not depend on map order.
func (c *crash) copyDir(d *node) *node {
	if c.dirs[d] {
		panic("diskio: a directory survives a crash at two places")
	}
	c.dirs[d] = true
	ents := c.entries[d]
	if ents == nil {
		ents = d.dir.synced
	}
	out := newDir()
	for _, name := range sortedKeys(ents) {
		n := ents[name]
		var cp *node
		if n.dir != nil {
			cp = c.copyDir(n)
		} else if cp = c.files[n]; cp == nil {
			cp = &node{file: c.crashFile(n.file)}
			c.files[n] = cp
		}
		out.dir.children[name] = cp
		out.dir.synced[name] = cp
	}
	return out
}

// crashFile returns one possible state of fl after the crash, fully synced.
func (c *crash) crashFile(fl *fileNode) *fileNode {
	base := fl.syncedSize // bytes [0, base) hold synced data, or data written over it
	if fl.truncLow < fl.syncedSize && chance(c.rng, c.o.MetaKeepPPM) {
		base = fl.truncLow
	}
	span := max(fl.size, base)
	// keep[i] is how many leading bytes of page i come from the current
	// contents rather than from the disk.
	keep := make([]int64, pagesFor(span))
	for i := range keep {
		if i < len(fl.dirty) && fl.dirty[i] {
			keep[i] = c.pageKeep()
		}
	}
	// newEnd returns the end of the current bytes page i keeps; oldEnd that
	// of the synced ones.
	newEnd := func(i int64) int64 { return min(i*pageBytes+keep[i], fl.size) }
	oldEnd := func(i int64) int64 { return min((i+1)*pageBytes, base) }
	size := base
	for i := base / pageBytes; i < int64(len(keep)); i++ {
		end := max(newEnd(i), oldEnd(i), size)
		size = min(end, span)
		if end < (i+1)*pageBytes {
			break
		}
	}
	out := &fileNode{size: size, truncLow: size, syncedSize: size}
	n := pagesFor(size)
	out.pages = make([]*page, n)
	out.dirty = make([]bool, n)
	for i := range n {
		lo, hi := i*pageBytes, min((i+1)*pageBytes, size)
		cur, synced := pageAt(fl.pages, i), pageAt(fl.synced, i)
		switch {
		case hi == lo+pageBytes && newEnd(i) >= hi:
			out.pages[i] = cur
		case hi == lo+pageBytes && newEnd(i) <= lo:
			out.pages[i] = synced
		default:
			pg := new(page)
			if synced != nil {
				copy(pg[:hi-lo], synced[:])
			}
			if k := newEnd(i) - lo; k > 0 && cur != nil {
				copy(pg[:k], cur[:])
			} else if k > 0 {
				clear(pg[:k])
			}
			out.pages[i] = pg
		}
	}
	out.synced = slices.Clone(out.pages)
	return out
}

// pageKeep draws how many leading bytes of a dirty page survive.
func (c *crash) pageKeep() int64 {
	switch {
	case c.o.PageKeepPPM+c.o.PageTornPPM == 0:
		return 0
	case c.o.PageKeepPPM >= ppmMax:
		return pageBytes
	}
	r := c.rng.Uint32N(ppmMax)
	switch {
	case r < c.o.PageKeepPPM:
		return pageBytes
	case r < c.o.PageKeepPPM+c.o.PageTornPPM:
		return sectorBytes * (1 + c.rng.Int64N(sectorsPerPage-1))
	}
	return 0
}
