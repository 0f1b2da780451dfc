package mvcc

// revChanges lists the keys changed at one main revision, in Sub order: key0 has Sub 0 and
// rest[i] has Sub i+1. A single-change revision (the common case) needs no allocation.
// Invariant: never modified once it is in the history.
type revChanges struct {
	key0 string
	rest []string
}

func (rc *revChanges) len() int { return 1 + len(rc.rest) }

func (rc *revChanges) key(sub int) string {
	if sub == 0 {
		return rc.key0
	}
	return rc.rest[sub-1]
}

type histChunk [histChunkEntries]revChanges

// history is the revision-ordered log of changes. Revisions are dense (every write txn that
// changed something gets the next one), so it is an array: entry i describes revision base+i.
// It is append-only at the back and consumed from the front by compaction, and a View captures
// it by value in O(1): the writer only writes entries at or beyond n, which no View reads, and
// drops chunks by re-slicing, never by clearing.
type history struct {
	// chunks hold the entries: entry i is chunks[i/histChunkEntries][i%histChunkEntries].
	chunks []*histChunk
	// base is the revision of entry 0. Invariant: base+n == the store's revision + 1.
	base int64
	// first is the oldest entry not yet compacted away; n is the number of entries written.
	// Invariant: 0 <= first < histChunkEntries (whole consumed chunks are dropped), first <= n.
	first, n int
}

func newHistory(base int64) history { return history{base: base} }

func (h *history) entry(i int) *revChanges {
	return &h.chunks[i/histChunkEntries][i%histChunkEntries]
}

// oldest returns the oldest retained entry and its revision.
func (h *history) oldest() (int64, *revChanges, bool) {
	if h.first == h.n {
		return 0, nil, false
	}
	return h.base + int64(h.first), h.entry(h.first), true
}

// add appends the changes of revision rev, which must be the next one.
func (h *history) add(rev int64, rc revChanges) {
	if rev != h.base+int64(h.n) {
		panicf("history: adding revision %d, expected %d", rev, h.base+int64(h.n))
	}
	if h.n == len(h.chunks)*histChunkEntries {
		h.chunks = append(h.chunks, new(histChunk))
	}
	*h.entry(h.n) = rc
	h.n++
}

// dropOldest forgets the oldest entry.
func (h *history) dropOldest() {
	if h.first == h.n {
		panicf("history: dropping from an empty history at revision %d", h.base+int64(h.n))
	}
	h.first++
	if h.first == histChunkEntries {
		h.chunks = h.chunks[1:]
		h.base += histChunkEntries
		h.first -= histChunkEntries
		h.n -= histChunkEntries
	}
}

// scan calls fn for each retained entry with revision >= from, in order, until fn returns false.
func (h *history) scan(from int64, fn func(rev int64, rc *revChanges) bool) {
	i := max(h.first, int(min(max(from-h.base, 0), int64(h.n))))
	for ; i < h.n; i++ {
		if !fn(h.base+int64(i), h.entry(i)) {
			return
		}
	}
}
