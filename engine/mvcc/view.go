package mvcc

import (
	"bytes"
	"slices"
	"sort"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// View is an immutable read view of the store at one revision. It is safe for concurrent use by
// any number of goroutines while the Store keeps writing.
type View struct {
	st state
}

// Rev returns the view's current revision.
func (v *View) Rev() int64 { return v.st.rev }

// CompactRev returns the view's compaction revision.
func (v *View) CompactRev() int64 { return v.st.compactRev }

// SortOrder is the order of a Range result; the numbering is etcdserverpb.RangeRequest_SortOrder's.
type SortOrder int

// Sort orders.
const (
	SortNone SortOrder = iota
	SortAscend
	SortDescend
)

// SortTarget is the field a Range result is sorted by; the numbering is
// etcdserverpb.RangeRequest_SortTarget's.
type SortTarget int

// Sort targets.
const (
	SortByKey SortTarget = iota
	SortByVersion
	SortByCreate
	SortByMod
	SortByValue
)

// RangeOptions are the options of a Range, with etcd's RangeRequest semantics.
type RangeOptions struct {
	Rev        int64 // <= 0: the current revision.
	Limit      int64 // <= 0: no limit.
	CountOnly  bool
	KeysOnly   bool
	SortOrder  SortOrder
	SortTarget SortTarget
	// Filters; 0 turns a filter off.
	MinModRev, MaxModRev, MinCreateRev, MaxCreateRev int64
}

func (o *RangeOptions) filtered() bool {
	return o.MinModRev != 0 || o.MaxModRev != 0 || o.MinCreateRev != 0 || o.MaxCreateRev != 0
}

// defaultOrder reports whether the request asks for the natural key order, as etcd decides
// it: SortNone whatever the target, or KEY ascending.
func (o *RangeOptions) defaultOrder() bool {
	return o.SortOrder == SortNone || (o.SortTarget == SortByKey && o.SortOrder == SortAscend)
}

func (o *RangeOptions) keep(v *version) bool {
	return (o.MaxModRev == 0 || v.mod.Main <= o.MaxModRev) &&
		(o.MinModRev == 0 || v.mod.Main >= o.MinModRev) &&
		(o.MaxCreateRev == 0 || v.create <= o.MaxCreateRev) &&
		(o.MinCreateRev == 0 || v.create >= o.MinCreateRev)
}

// order returns the effective sort order as etcd applies it: a target other than KEY with
// SortNone sorts ascending, and SortNone or KEY+ASCEND is the natural (key) order, reported as
// SortNone.
func (o *RangeOptions) order() (SortOrder, error) {
	if o.SortOrder < SortNone || o.SortOrder > SortDescend ||
		o.SortTarget < SortByKey || o.SortTarget > SortByValue {
		return SortNone, ErrInvalidSortOption
	}
	order := o.SortOrder
	if o.SortTarget != SortByKey && order == SortNone {
		order = SortAscend
	}
	if o.SortTarget == SortByKey && order == SortAscend {
		order = SortNone
	}
	return order, nil
}

// RangeResult is the result of a Range.
type RangeResult struct {
	// KVs are fresh objects owned by the caller, who may set their fields. Their Key and Value
	// slices alias the store's immutable bytes and must never be written into.
	KVs []*mvccpb.KeyValue
	// Count is the number of keys in the range at the read revision; Limit and the filters do not
	// change it (etcd).
	Count int64
	// More is true iff Limit > 0 and more results than Limit remained after filtering.
	More bool
	// Rev is the view's current revision (what goes in header.revision), even when an older
	// revision was read.
	Rev int64
}

// Range returns the keys in [key, end) at revision opts.Rev, with etcd's semantics:
//   - end empty: the single key; end == "\x00": every key >= key; otherwise a non-empty
//     end <= key gives nothing. Keys compare as raw bytes.
//   - opts.Rev above the current revision: ErrFutureRev; below the compaction revision:
//     ErrCompacted (reading exactly at it is allowed).
//   - With the natural order and no filter, a read at the current revision stops after Limit
//     results: O(log² n + Limit), Count coming from ranks in the live tree. Otherwise every key of
//     the range is visited; results are filtered, sorted as etcd sorts them (sortCands), then
//     truncated to Limit. As in etcd, a sort requested with SortNone (a target other than KEY)
//     only reorders the first Limit+1 keys.
func (v *View) Range(key, end []byte, opts RangeOptions) (RangeResult, error) {
	return v.st.rangeKeys(key, end, opts)
}

// bounds turns a non-empty range end into [lo, hi): bounded is false for end == "\x00", and
// empty is true when a bounded hi <= lo.
func bounds(key, end []byte) (lo, hi string, bounded, empty bool) {
	lo = unsafeString(key)
	if len(end) == 1 && end[0] == 0 {
		return lo, "", false, false
	}
	hi = unsafeString(end)
	return lo, hi, true, hi <= lo
}

// cand is one result candidate: a key and its version at the read revision.
type cand struct {
	ki *keyIndex
	v  *version
}

func (st *state) rangeKeys(key, end []byte, o RangeOptions) (RangeResult, error) {
	res := RangeResult{Rev: st.rev}
	rev := o.Rev
	if rev > st.rev {
		return res, ErrFutureRev
	}
	if rev <= 0 {
		rev = st.rev
	}
	if rev < st.compactRev {
		return res, ErrCompacted
	}
	order, err := o.order()
	if err != nil {
		return res, err
	}
	if len(end) == 0 {
		st.rangeOne(&res, key, rev, &o)
		return res, nil
	}
	lo, hi, bounded, empty := bounds(key, end)
	if empty {
		return res, nil
	}
	// etcd reads Limit+1 keys in key order whenever the request's own order is the default
	// and no filter is set, even when the target then sorts them (a target other than KEY with
	// SortNone sorts ascending): such a sort reorders only those Limit+1 keys.
	natural := o.defaultOrder() && !o.filtered()
	if rev == st.rev && (o.CountOnly || (natural && order == SortNone)) {
		st.rangeLive(&res, lo, hi, bounded, &o)
		return res, nil
	}
	var cands []cand
	collect := !o.CountOnly
	st.visit(lo, hi, bounded, rev, func(ki *keyIndex, v *version) bool {
		res.Count++
		if collect {
			cands = append(cands, cand{ki, v})
			collect = !natural || o.Limit <= 0 || int64(len(cands)) <= o.Limit
		}
		return true
	})
	if o.CountOnly {
		return res, nil
	}
	if o.filtered() {
		cands = slices.DeleteFunc(cands, func(c cand) bool { return !o.keep(c.v) })
	}
	sortCands(cands, o.SortTarget, order)
	if o.Limit > 0 && int64(len(cands)) > o.Limit {
		cands = cands[:o.Limit]
		res.More = true
	}
	res.KVs = makeKVs(cands, o.KeysOnly)
	return res, nil
}

// rangeOne is the single-key Range.
func (st *state) rangeOne(res *RangeResult, key []byte, rev int64, o *RangeOptions) {
	k := unsafeString(key)
	ki, ok := st.live.Get(k)
	if !ok && rev != st.rev {
		ki, ok = st.dead.Get(k)
	}
	if !ok {
		return
	}
	v := ki.at(rev)
	if v == nil {
		return
	}
	res.Count = 1
	if o.CountOnly || !o.keep(v) {
		return
	}
	res.KVs = makeOneKV(ki, v, o.KeysOnly)
}

// rangeLive is a natural-order, unfiltered Range (or any count) at the current revision.
func (st *state) rangeLive(res *RangeResult, lo, hi string, bounded bool, o *RangeOptions) {
	if o.CountOnly {
		res.Count = st.countLive(lo, hi, bounded)
		return
	}
	var cands []cand
	if o.Limit > 0 && o.Limit < 64 {
		cands = make([]cand, 0, o.Limit+1)
	}
	st.live.Ascend(lo, func(k string, ki *keyIndex) bool {
		if bounded && k >= hi {
			return false
		}
		cands = append(cands, cand{ki, ki.at(st.rev)})
		return o.Limit <= 0 || int64(len(cands)) <= o.Limit
	})
	res.Count = int64(len(cands))
	if o.Limit > 0 && int64(len(cands)) > o.Limit {
		cands = cands[:o.Limit]
		res.More = true
		res.Count = st.countLive(lo, hi, bounded)
	}
	res.KVs = makeKVs(cands, o.KeysOnly)
}

// countLive returns the number of live keys in [lo, hi) (or >= lo) from ranks, without a walk.
func (st *state) countLive(lo, hi string, bounded bool) int64 {
	n := st.live.Len()
	if bounded {
		n = rank(st.live, hi)
	}
	return int64(n - rank(st.live, lo))
}

// rank returns the number of keys in t that are < k: a binary search over GetAt, O(log² n).
func rank(t *keyTree, k string) int {
	lo, hi := 0, t.Len()
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if mk, _, _ := t.GetAt(mid); mk < k {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// visit calls fn, in key order, for each key in [lo, hi) (or >= lo) that exists at revision rev,
// with its version at rev, until fn returns false. At the current revision only the live tree is
// walked; at an older one the live and dead trees are merged.
func (st *state) visit(lo, hi string, bounded bool, rev int64, fn func(*keyIndex, *version) bool) {
	if rev == st.rev {
		st.live.Ascend(lo, func(k string, ki *keyIndex) bool {
			if bounded && k >= hi {
				return false
			}
			return fn(ki, ki.at(st.rev))
		})
		return
	}
	st.visitAll(lo, func(ki *keyIndex) bool {
		if bounded && ki.key >= hi {
			return false
		}
		if v := ki.at(rev); v != nil {
			return fn(ki, v)
		}
		return true
	})
}

// visitAll calls fn for every keyIndex with key >= lo, live or dead, in key order, until fn
// returns false.
func (st *state) visitAll(lo string, fn func(*keyIndex) bool) {
	li, di := st.live.Iter(), st.dead.Iter()
	lok, dok := li.Seek(lo), di.Seek(lo)
	for lok || dok {
		var ki *keyIndex
		if lok && (!dok || li.Key() < di.Key()) {
			ki, lok = li.Value(), li.Next()
		} else {
			ki, dok = di.Value(), di.Next()
		}
		if !fn(ki) {
			return
		}
	}
}

// sortCands sorts as etcd does, with sort.Sort and the same comparisons, so that even the order
// of ties (which sort.Sort does not keep) is etcd's: it depends only on the input order, key
// order here as there, and on the results of Less.
func sortCands(cands []cand, target SortTarget, order SortOrder) {
	if order == SortNone {
		return
	}
	s := candSort{cands: cands}
	switch target {
	case SortByKey:
		s.less = func(a, b *cand) bool { return a.ki.key < b.ki.key }
	case SortByVersion:
		s.less = func(a, b *cand) bool { return a.v.ver-b.v.ver < 0 }
	case SortByCreate:
		s.less = func(a, b *cand) bool { return a.v.create-b.v.create < 0 }
	case SortByMod:
		s.less = func(a, b *cand) bool { return a.v.mod.Main-b.v.mod.Main < 0 }
	case SortByValue:
		s.less = func(a, b *cand) bool { return bytes.Compare(a.ki.value(a.v), b.ki.value(b.v)) < 0 }
	}
	if order == SortDescend {
		sort.Sort(sort.Reverse(s))
		return
	}
	sort.Sort(s)
}

type candSort struct {
	cands []cand
	less  func(a, b *cand) bool
}

func (s candSort) Len() int           { return len(s.cands) }
func (s candSort) Swap(i, j int)      { s.cands[i], s.cands[j] = s.cands[j], s.cands[i] }
func (s candSort) Less(i, j int) bool { return s.less(&s.cands[i], &s.cands[j]) }

// oneKV is a single-result KVs slice and its KeyValue in one allocation.
type oneKV struct {
	kv   mvccpb.KeyValue
	list [1]*mvccpb.KeyValue
}

func makeOneKV(ki *keyIndex, v *version, keysOnly bool) []*mvccpb.KeyValue {
	o := &oneKV{}
	fillKV(&o.kv, ki, v, keysOnly)
	o.list[0] = &o.kv
	return o.list[:]
}

func makeKVs(cands []cand, keysOnly bool) []*mvccpb.KeyValue {
	switch len(cands) {
	case 0:
		return nil
	case 1:
		return makeOneKV(cands[0].ki, cands[0].v, keysOnly)
	}
	kvs := make([]mvccpb.KeyValue, len(cands))
	out := make([]*mvccpb.KeyValue, len(cands))
	for i, c := range cands {
		fillKV(&kvs[i], c.ki, c.v, keysOnly)
		out[i] = &kvs[i]
	}
	return out
}

// Events returns the events of every change with main revision >= fromRev, in revision order, as
// End returned them: whole revisions only, at most eventsMax events unless the first revision
// alone has more. next is the first revision not covered: the one to continue from, Rev()+1
// once the view is exhausted. As etcd's watch, it may start at CompactRev itself, whose changes
// compaction keeps; fromRev < CompactRev fails with ErrCompacted, and so does fromRev ==
// CompactRev once those changes are gone (a store restored from a format 1 snapshot holds the
// history from CompactRev+1 only).
func (v *View) Events(fromRev int64, eventsMax int) (events []*mvccpb.Event, next int64, err error) {
	if fromRev < v.st.compactRev || (fromRev == v.st.compactRev && !v.holdsChangesOf(fromRev)) {
		return nil, fromRev, ErrCompacted
	}
	next = max(fromRev, v.st.rev+1)
	v.st.hist.scan(fromRev, func(main int64, rc *revChanges) bool {
		n := rc.len()
		if len(events) > 0 && len(events)+n > eventsMax {
			next = main
			return false
		}
		evs := newEvents(n)
		for sub := range n {
			key := rc.key(sub)
			ki, ok := v.st.live.Get(key)
			if !ok {
				ki, ok = v.st.dead.Get(key)
			}
			var ver *version
			if ok {
				ver = ki.find(Revision{Main: main, Sub: int64(sub)})
			}
			if ver == nil {
				panicf("Events: change %d.%d of key %q is not retained (compact revision %d)",
					main, sub, key, v.st.compactRev)
			}
			fillEvent(evs[sub], key, ver, ki.value(ver))
		}
		events = append(events, evs...)
		return true
	})
	return events, next, nil
}

// AnyChanged reports whether a key changed at main revision rev satisfies want, reading only
// the history, not the keys' versions. ok is false when the view's history does not list rev.
func (v *View) AnyChanged(rev int64, want func(key string) bool) (wanted, ok bool) {
	h := &v.st.hist
	i := rev - h.base
	if rev > v.st.rev || i < int64(h.first) || i >= int64(h.n) {
		return false, false
	}
	rc := h.entry(int(i))
	for sub := range rc.len() {
		if want(rc.key(sub)) {
			return true, true
		}
	}
	return false, true
}

// holdsChangesOf reports whether the history still lists every change of revision rev: rev 1
// (the initial revision) has none, and the oldest entry is the first one not yet compacted.
func (v *View) holdsChangesOf(rev int64) bool {
	if rev < 2 {
		return true
	}
	oldest, _, ok := v.st.hist.oldest()
	return ok && oldest <= rev
}

// FirstRev is the lowest revision a read may ask for without ErrCompacted, as etcd checks a
// txn's ranges before running it: the compaction revision, or -1 before the first compaction.
func (v *View) FirstRev() int64 {
	if !v.st.compacted {
		return -1
	}
	return v.st.compactRev
}
