package mvcc

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync/atomic"
	"unsafe"

	"github.com/tidwall/btree"
)

// ErrCompacted is returned when a read or a compaction names a revision that has been compacted.
var ErrCompacted = errors.New("mvcc: required revision has been compacted")

// ErrFutureRev is returned when a read or a compaction names a revision above the current one.
var ErrFutureRev = errors.New("mvcc: required revision is a future revision")

// ErrInvalidSortOption is returned by Range for a SortOrder or SortTarget outside its enum. The
// gRPC layer rejects those first (etcdserver: invalid sort option); this is the backstop.
var ErrInvalidSortOption = errors.New("mvcc: invalid sort option")

// ErrCorrupt is wrapped by every Restore error that is caused by the stream's content (bad magic,
// unknown format version, checksum mismatch, truncation, or a state that breaks an invariant).
var ErrCorrupt = errors.New("mvcc: corrupt snapshot")

// Revision identifies one change: Main is the store revision of the write txn that made it, Sub
// its position inside that txn. Revisions order changes: by Main, then by Sub.
type Revision struct{ Main, Sub int64 }

func (a Revision) less(b Revision) bool {
	return a.Main < b.Main || (a.Main == b.Main && a.Sub < b.Sub)
}

// version is one change of one key: a put, or a tombstone when ver == 0. It holds no pointer,
// so the garbage collector never scans the arrays of versions, which are most of a store that
// keeps history.
// Invariant: never modified once it is in a keyIndex.
type version struct {
	mod    Revision // when the change was made.
	create int64    // main revision of the put that created this generation; 0 for a tombstone.
	ver    int64    // 1 on create, +1 per put; 0 marks a tombstone.
	lease  int64    // 0 for no lease and for a tombstone.
	val    valRef   // the value; zero for a tombstone and for an empty value.
}

// valRef locates a value in its keyIndex's segments: segs[seg][off : off+n].
type valRef struct{ seg, off, n uint32 }

func (v *version) tombstone() bool { return v.ver == 0 }

// keyIndex is one key and its retained versions.
type keyIndex struct {
	// key is owned by the store (never a caller's buffer). Its bytes are handed out as
	// KeyValue.Key and are never written.
	key string
	// data points to the key's versions and values; read it with versions and value.
	// Invariant: a View reads only the versions at or below its revision. So the writer may
	// append a put to a keyIndex that Views share (storing a new keyData atomically): every
	// View keeps seeing exactly the versions it captured, without the writer copying the
	// keyIndex and the B-tree path to it.
	data atomic.Pointer[keyData]
	// epoch is Store.epoch when this keyIndex was made.
	// Invariant: a keyIndex reachable from a published View has epoch < Store.epoch, so the writer
	// may change a keyIndex in place, other than by appending a put, iff its epoch ==
	// Store.epoch; otherwise it replaces it.
	epoch uint64
}

// keyData is a key's physically retained versions and the segments holding their values.
// Values live in a few large pointer-free segments per key rather than one allocation each,
// so that the collector marks a handful of objects per key instead of one per version.
type keyData struct {
	// vers are the versions.
	// Invariant: non-empty; strictly increasing mod; the last is a put iff the keyIndex is in the
	// writer's live tree; the logically retained ones (see retained) form a valid history
	// (checkVersion).
	// Invariant: nothing ever writes a slot of the backing array below the length of a slice
	// that was derived from it; the writer only appends (beyond every published length) or makes
	// a new array.
	vers []version
	// segs hold the values. Each segment's length is its capacity, fixed when it is made.
	// Invariant: the same backing-array rule as vers; and in a keyIndex that a View may reach
	// (epoch < Store.epoch) a segment index, once published, names the same bytes for good, so
	// a reader may resolve a version against any keyData it later loads from that keyIndex.
	segs [][]byte
	// fill is how many bytes of the last segment hold values.
	// Invariant: the writer writes segment bytes only at or beyond fill of the last segment,
	// which no published version refers to.
	fill uint32
}

// store copies value into the segments and returns where it is. A segment is twice the size
// of the previous one, up to valueSegmentBytesMax, or exactly as large as a value that does
// not fit that.
func (d *keyData) store(value []byte) valRef {
	ref, dst := d.reserve(len(value))
	copy(dst, value)
	return ref
}

// reserve makes room for a value of n bytes, to be written to dst, as store does.
func (d *keyData) reserve(n int) (ref valRef, dst []byte) {
	if n == 0 {
		return valRef{}, nil
	}
	if uint64(n) > math.MaxUint32 {
		panicf("keyData.reserve: a value of %d bytes", n)
	}
	last := len(d.segs) - 1
	if last < 0 || int(d.fill)+n > len(d.segs[last]) {
		size := n
		if last >= 0 {
			size = max(n, min(2*len(d.segs[last]), valueSegmentBytesMax))
		}
		seg := slices.Grow([]byte(nil), size)
		d.segs = append(d.segs, seg[:cap(seg)])
		d.fill, last = 0, last+1
	}
	ref = valRef{seg: uint32(last), off: d.fill, n: uint32(n)}
	d.fill += uint32(n)
	return ref, d.value(ref)
}

// value returns the bytes ref names.
func (d *keyData) value(ref valRef) []byte {
	if ref.n == 0 {
		return nil
	}
	end := ref.off + ref.n
	return d.segs[ref.seg][ref.off:end:end]
}

// repack returns keyData holding vers (which it may renumber in place) and only the segments
// their values need: the segments before the first one in use are dropped, and if the rest hold
// more than twice the values' bytes (long-lived values pinning segments that were mostly
// compacted away) the values are copied into fresh ones. Copying costs at most what it frees.
func (d *keyData) repack(vers []version) *keyData {
	first, live := len(d.segs), 0
	for i := range vers {
		if r := vers[i].val; r.n > 0 {
			first = min(first, int(r.seg))
			live += int(r.n)
		}
	}
	if first == len(d.segs) {
		return &keyData{vers: vers}
	}
	held := 0
	for _, seg := range d.segs[first:] {
		held += len(seg)
	}
	if held > 2*live {
		nd := &keyData{vers: vers}
		for i := range vers {
			if vers[i].val.n > 0 {
				vers[i].val = nd.store(d.value(vers[i].val))
			}
		}
		return nd
	}
	for i := range vers {
		if vers[i].val.n > 0 {
			vers[i].val.seg -= uint32(first)
		}
	}
	return &keyData{vers: vers, segs: d.segs[first:], fill: d.fill}
}

func newKeyIndex(key string, d *keyData, epoch uint64) *keyIndex {
	ki := &keyIndex{key: key, epoch: epoch}
	ki.data.Store(d)
	return ki
}

// versions returns the versions; a View must read the ones above its revision as absent.
func (ki *keyIndex) versions() []version { return ki.data.Load().vers }

// value returns the value of v, one of ki's versions. It aliases the store's immutable bytes.
func (ki *keyIndex) value(v *version) []byte { return ki.data.Load().value(v.val) }

// newest returns the newest version.
func (ki *keyIndex) newest() *version {
	vers := ki.versions()
	return &vers[len(vers)-1]
}

// at returns the version of the key visible at main revision rev, or nil if the key did not
// exist then (never written yet, or deleted).
func (ki *keyIndex) at(rev int64) *version {
	vers := ki.versions()
	i := firstAfter(vers, rev)
	if i == 0 || vers[i-1].tombstone() {
		return nil
	}
	return &vers[i-1]
}

// retained returns the versions that are logically part of the store at compactRev when read up
// to main revision rev: the newest version <= compactRev if it is a put (what a read at compactRev
// sees), then every version in (compactRev, rev]. It is independent of how far physical
// compaction has progressed.
func (ki *keyIndex) retained(compactRev, rev int64) []version {
	vers := ki.versions()
	i := firstAfter(vers, compactRev)
	j := firstAfter(vers, rev)
	if i > 0 && !vers[i-1].tombstone() {
		i--
	}
	return vers[i:j]
}

// carried returns the versions a snapshot carries: those retained at compactRev, and every
// change made at compactRev itself (tombstones too), which compaction keeps (etcd keeps such a
// tombstone until its next compaction) so that a watch may start at compactRev, also after a
// restart.
func (ki *keyIndex) carried(compactRev, rev int64) []version {
	vers := ki.versions()
	return vers[physicalCut(vers, compactRev):firstAfter(vers, rev)]
}

// find returns the version with mod revision r, or nil.
func (ki *keyIndex) find(r Revision) *version {
	vers := ki.versions()
	lo, hi := 0, len(vers)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if vers[mid].mod.less(r) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < len(vers) && vers[lo].mod == r {
		return &vers[lo]
	}
	return nil
}

// firstAfter returns the index of the first version whose main revision is > rev.
func firstAfter(vers []version, rev int64) int {
	if n := len(vers); n > 0 && vers[n-1].mod.Main <= rev {
		return n // the common case: a read at or after the newest version
	}
	lo, hi := 0, len(vers)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if vers[mid].mod.Main <= rev {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

type keyTree = btree.Map[string, *keyIndex]

func newKeyTree() *keyTree { return btree.NewMap[string, *keyIndex](treeDegree) }

// state is what a read sees: the key trees, the history and the revisions they describe.
type state struct {
	// live holds the keys whose newest version is a put. Count at the current revision is a
	// difference of ranks in it.
	// Invariant: disjoint from dead.
	live *keyTree
	// dead holds the keys whose newest version is a tombstone and that still retain versions.
	dead *keyTree
	// hist lists the keys each main revision changed.
	// Invariant: holds every revision from the oldest one not yet physically compacted to rev, and
	// for each entry at or above compactRev every listed (key, Revision{main, sub}) version is
	// physically held (the entry at compactRev only until a restore, which rebuilds the history
	// from compactRev+1).
	hist history
	// rev is the current revision: the newest applied write txn (1 for a new store).
	rev int64
	// compactRev is the compaction revision. Invariant: 0 <= compactRev <= rev.
	compactRev int64
	// compacted is set by the first Compact. Until then revision 0 may still be compacted, as
	// etcd's compaction revision starts below every revision.
	// Invariant: compacted || compactRev == 0.
	compacted bool
}

// Store is the writable MVCC store. It is single-writer: every method runs on one goroutine (the
// engine's apply loop). Readers on other goroutines use Views.
type Store struct {
	st state
	// epoch counts the Views published so far. See keyIndex.epoch.
	epoch uint64
	// view is the View of the current state, if one has been made since the state last changed.
	view *View
	// keys caches the keyIndexes of st.live and st.dead by key, for the writer's single-key
	// lookups (every Put, single-key DeleteRange and compaction step; see lookup): a B-tree
	// search compares against about log2(keys) keys in separate allocations, which under a
	// write load costs a cache miss each. It fills as keys are written, not at Restore, which
	// filling it would slow by about half.
	// Invariant: each entry is the keyIndex of its key in st.live or st.dead.
	keys map[string]*keyIndex
	// txn is reused by every Begin. Invariant: at most one Txn is open.
	txn Txn
	// compactSub is how many changes of the oldest history entry physical compaction has done.
	compactSub int
	// bytes is what the retained keys and versions hold (see Bytes).
	bytes int64
}

// New returns an empty store at revision 1 with compact revision 0.
func New() *Store {
	s := &Store{
		st:    state{live: newKeyTree(), dead: newKeyTree(), hist: newHistory(2), rev: 1},
		keys:  map[string]*keyIndex{},
		epoch: 1,
	}
	s.txn.s = s
	return s
}

// Rev returns the current revision.
func (s *Store) Rev() int64 { return s.st.rev }

// CompactRev returns the compaction revision: reads below it fail with ErrCompacted.
func (s *Store) CompactRev() int64 { return s.st.compactRev }

// Bytes returns the bytes held by the physically retained keys and versions: key and value bytes
// plus a fixed overhead per key and per version. It grows with every write and shrinks as
// CompactStep removes versions; it is the measure for the space quota.
func (s *Store) Bytes() int64 { return s.bytes }

// View returns an immutable read view of the current state in O(1): the B-trees are shared
// copy-on-write, the history is captured by value, and the writer never modifies anything a View
// reads (see keyIndex and history). Calling
// View again before the next change returns the same View. View must be called on the writer's
// goroutine with no Txn open; the View may then be used from any number of goroutines.
func (s *Store) View() *View {
	s.mustNotBeInTxn("View")
	if s.view == nil {
		s.view = &View{st: state{
			live:       s.st.live.Copy(),
			dead:       s.st.dead.Copy(),
			hist:       s.st.hist,
			rev:        s.st.rev,
			compactRev: s.st.compactRev,
			compacted:  s.st.compacted,
		}}
		s.epoch++
	}
	return s.view
}

// Compact makes rev the compaction revision. Its logical effect is immediate: from now on reads
// below rev fail with ErrCompacted, and HashKV and WriteTo describe the compacted state. The
// memory is reclaimed later, by CompactStep. Compaction does not create a revision.
func (s *Store) Compact(rev int64) error {
	s.mustNotBeInTxn("Compact")
	if rev < 0 || (s.st.compacted && rev <= s.st.compactRev) {
		return ErrCompacted
	}
	if rev > s.st.rev {
		return ErrFutureRev
	}
	s.st.compactRev, s.st.compacted = rev, true
	// The oldest entry may be the previous compaction revision's, worked through for that one
	// only: work through it again (compactKey is idempotent).
	s.compactSub = 0
	s.view = nil
	return nil
}

// CompactStep removes versions that are no longer reachable below the compaction revision: for
// each key, every version < CompactRev except the newest one if it is a put and the key has no
// change at CompactRev (see physicalCut). It works through the history entries below CompactRev
// from the oldest one and does at most about versionsMax units of work (one per change
// visited, per version dropped and per version copied, plus at most one key's survivors). It never
// changes what any read returns. It reports whether physical compaction has caught up with
// CompactRev.
func (s *Store) CompactStep(versionsMax int) (done bool) {
	s.mustNotBeInTxn("CompactStep")
	if versionsMax <= 0 {
		panicf("CompactStep: versionsMax %d must be positive", versionsMax)
	}
	work := 0
	for work < versionsMax {
		main, rc, ok := s.st.hist.oldest()
		if !ok || main > s.st.compactRev {
			return true
		}
		for n := rc.len(); s.compactSub < n && work < versionsMax; {
			w, keyDone := s.compactKey(rc.key(s.compactSub), versionsMax-work)
			work += w
			if keyDone {
				s.compactSub++
			}
		}
		if s.compactSub < rc.len() {
			break
		}
		if main == s.st.compactRev {
			// Its keys are compacted, but its changes stay listed for Events.
			return true
		}
		s.st.hist.dropOldest()
		s.compactSub = 0
	}
	return s.compactDone()
}

// compactDone reports whether every history entry at or below the compaction revision has been
// worked through; the one at the compaction revision itself stays in the history.
func (s *Store) compactDone() bool {
	main, rc, ok := s.st.hist.oldest()
	return !ok || main > s.st.compactRev || (main == s.st.compactRev && s.compactSub == rc.len())
}

// physicalCut returns how many of the oldest versions compaction at compactRev drops: every
// version below compactRev except the newest one if it is a put and the key has no change at
// compactRev itself. Unlike the logical retained set, it keeps every change made at compactRev,
// tombstones included, as etcd v3.7.3 keeps them until the next compaction: a watch may start
// at the compaction revision and must see its deletes (etcd #18089, #19179).
func physicalCut(vers []version, compactRev int64) int {
	i := firstAfter(vers, compactRev-1)
	if i < len(vers) && vers[i].mod.Main == compactRev {
		return i
	}
	if i > 0 && !vers[i-1].tombstone() {
		return i - 1
	}
	return i
}

// compactKey drops up to budget of key's versions that compaction at CompactRev makes
// unreachable. It returns the work done (at least 1) and whether the key is fully compacted.
func (s *Store) compactKey(key string, budget int) (work int, done bool) {
	ki, ok := s.lookup(key)
	if !ok {
		// A dead key already compacted away by an older change of it.
		return 1, true
	}
	d := ki.data.Load()
	vers := d.vers
	tree := s.st.live
	if vers[len(vers)-1].tombstone() {
		tree = s.st.dead
	}
	cut := physicalCut(vers, s.st.compactRev)
	if cut == 0 {
		return 1, true
	}
	done = true
	if cut > budget {
		cut, done = budget, false
	}
	for j := range vers[:cut] {
		s.bytes -= versionOverheadBytes + int64(vers[j].val.n)
	}
	work = 1 + cut
	rest := vers[cut:]
	if len(rest) == 0 {
		if tree != s.st.dead {
			panicf("compactKey: live key %q would lose its newest put at compact revision %d",
				key, s.st.compactRev)
		}
		tree.Delete(key)
		delete(s.keys, key)
		s.bytes -= keyOverheadBytes + int64(len(key))
		return work, done
	}
	nd := &keyData{vers: rest, segs: d.segs, fill: d.fill}
	if done && len(rest) <= compactCopyVersionsMax {
		nd = d.repack(append([]version(nil), rest...))
		work += len(rest)
	}
	if ki.epoch == s.epoch {
		ki.data.Store(nd)
	} else {
		s.setKey(tree, newKeyIndex(ki.key, nd, s.epoch))
	}
	return work, done
}

// lookup returns the keyIndex of key in st.live or st.dead.
func (s *Store) lookup(key string) (*keyIndex, bool) {
	if ki, ok := s.keys[key]; ok {
		return ki, true
	}
	ki, ok := s.st.live.Get(key)
	if !ok {
		ki, ok = s.st.dead.Get(key)
	}
	if ok {
		s.keys[ki.key] = ki
	}
	return ki, ok
}

// setKey puts ki into tree (st.live or st.dead) and keys, in place of the key's keyIndex there.
func (s *Store) setKey(tree *keyTree, ki *keyIndex) {
	tree.Set(ki.key, ki)
	s.keys[ki.key] = ki
}

func (s *Store) mustNotBeInTxn(op string) {
	if s.txn.open {
		panicf("%s called with a Txn open", op)
	}
}

// unsafeString views b as a string for a lookup. The result must not be stored.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// keyBytes returns the bytes of a stored key without copying. Invariant: nobody writes into them.
func keyBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

func panicf(format string, args ...any) {
	panic(fmt.Sprintf("mvcc: "+format, args...))
}
