package mvcc

import (
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Txn is a write transaction. All its changes share one main revision, Store.Rev()+1, with Sub
// numbering them in order; End commits them and bumps the store's revision by exactly one iff
// there was at least one change. Its reads see its own earlier writes.
//
// Begin returns the same *Txn every time: it is valid from Begin to End only. No View, Compact or
// CompactStep may run while it is open.
type Txn struct {
	s    *Store
	open bool
	// changes are this txn's changes. Invariant: changes[i] has Revision{s.st.rev+1, i}.
	changes []change
	// doomed is scratch space for DeleteRange.
	doomed []*keyIndex
}

// change is one put or tombstone (v.ver == 0) of key, as it was written.
type change struct {
	key   string
	v     version
	value []byte // the stored value, for the event
}

// Begin opens the write transaction.
func (s *Store) Begin() *Txn {
	s.mustNotBeInTxn("Begin")
	s.txn.open = true
	return &s.txn
}

// Rev returns the revision this txn's writes get.
func (t *Txn) Rev() int64 { return t.s.st.rev + 1 }

// Range reads like View.Range, at the txn's current state: its current revision is Rev() once
// the txn has changed something, Store.Rev() before.
func (t *Txn) Range(key, end []byte, opts RangeOptions) (RangeResult, error) {
	t.mustBeOpen("Range")
	st := t.s.st
	if len(t.changes) > 0 {
		st.rev++
	}
	return st.rangeKeys(key, end, opts)
}

// Put writes value to key with the given lease (0 for none). With prevKV it returns the key's
// previous KeyValue, or nil if the key did not exist. key and value are copied.
func (t *Txn) Put(key, value []byte, lease int64, prevKV bool) (prev *mvccpb.KeyValue) {
	t.mustBeOpen("Put")
	s := t.s
	rev := Revision{Main: s.st.rev + 1, Sub: int64(len(t.changes))}
	nv := version{mod: rev, lease: lease}
	s.bytes += versionOverheadBytes + int64(len(value))
	ki, found := s.lookup(unsafeString(key))
	var last *version
	if found {
		last = ki.newest()
	}
	if last != nil && !last.tombstone() {
		if prevKV {
			prev = newKV(ki, last, false)
		}
		nv.create, nv.ver = last.create, last.ver+1
		// In place even when Views share ki: they read no version above their revision.
		value = s.appendVersion(ki, &nv, value)
	} else {
		var nd keyData
		if found {
			// Views may share the dead keyIndex: nd only appends beyond what they read.
			nd = *ki.data.Load()
			s.st.dead.Delete(ki.key)
			ki = newKeyIndex(ki.key, &nd, s.epoch)
		} else {
			ki = newKeyIndex(string(key), &nd, s.epoch)
			s.bytes += keyOverheadBytes + int64(len(key))
		}
		nv.create, nv.ver = rev.Main, 1
		nv.val = nd.store(value)
		nd.vers = append(nd.vers, nv)
		value = nd.value(nv.val)
		s.setKey(s.st.live, ki)
	}
	t.changes = append(t.changes, change{key: ki.key, v: nv, value: value})
	s.view = nil
	return prev
}

// DeleteRange deletes the keys in [key, end) (see View.Range for the range forms) by writing a
// tombstone for each. It returns their previous KeyValues in key order; deleting nothing is no
// change.
func (t *Txn) DeleteRange(key, end []byte) (deleted []*mvccpb.KeyValue) {
	t.mustBeOpen("DeleteRange")
	s := t.s
	st := s.st
	if len(t.changes) > 0 {
		st.rev++
	}
	doomed := t.doomed[:0]
	if len(end) == 0 {
		if ki, ok := s.lookup(unsafeString(key)); ok && !ki.newest().tombstone() {
			doomed = append(doomed, ki)
		}
	} else if lo, hi, bounded, empty := bounds(key, end); !empty {
		st.visit(lo, hi, bounded, st.rev, func(ki *keyIndex, _ *version) bool {
			doomed = append(doomed, ki)
			return true
		})
	}
	if len(doomed) == 0 {
		return nil
	}
	deleted = make([]*mvccpb.KeyValue, len(doomed))
	kvs := make([]mvccpb.KeyValue, len(doomed))
	for i, ki := range doomed {
		fillKV(&kvs[i], ki, ki.newest(), false)
		deleted[i] = &kvs[i]
		nv := version{mod: Revision{Main: s.st.rev + 1, Sub: int64(len(t.changes))}}
		s.bytes += versionOverheadBytes
		s.st.live.Delete(ki.key)
		if ki.epoch == s.epoch {
			d := ki.data.Load()
			d.vers = append(d.vers, nv)
		} else {
			d := *ki.data.Load()
			d.vers = append(d.vers, nv)
			ki = newKeyIndex(ki.key, &d, s.epoch)
		}
		if _, replaced := s.st.dead.Set(ki.key, ki); replaced {
			panicf("DeleteRange: key %q was both live and dead", ki.key)
		}
		s.keys[ki.key] = ki
		t.changes = append(t.changes, change{key: ki.key, v: nv})
	}
	clear(doomed)
	t.doomed = doomed[:0]
	s.view = nil
	return deleted
}

// End commits the txn. It returns the txn's events in order: a PUT carries the full KeyValue, a
// DELETE carries {key, mod_revision}. It returns nil if the txn changed nothing.
func (t *Txn) End() []*mvccpb.Event {
	t.mustBeOpen("End")
	t.open = false
	n := len(t.changes)
	if n == 0 {
		return nil
	}
	s := t.s
	s.st.rev++
	rc := revChanges{key0: t.changes[0].key}
	if n > 1 {
		rc.rest = make([]string, n-1)
		for i := range rc.rest {
			rc.rest[i] = t.changes[i+1].key
		}
	}
	s.st.hist.add(s.st.rev, rc)
	events := newEvents(n)
	for i := range t.changes {
		c := &t.changes[i]
		fillEvent(events[i], c.key, &c.v, c.value)
	}
	clear(t.changes)
	t.changes = t.changes[:0]
	return events
}

// appendVersion stores value and adds nv, which it points at the value, as the newest version
// of ki; it returns the stored value. Views that share ki load its data concurrently, so a new
// keyData is published (atomically) unless no View can see ki.
func (s *Store) appendVersion(ki *keyIndex, nv *version, value []byte) []byte {
	d := ki.data.Load()
	shared := ki.epoch != s.epoch
	if shared {
		c := *d
		d = &c
	}
	nv.val = d.store(value)
	d.vers = append(d.vers, *nv)
	if shared {
		ki.data.Store(d)
	}
	return d.value(nv.val)
}

func (t *Txn) mustBeOpen(op string) {
	if !t.open {
		panicf("Txn.%s called on a Txn that is not open", op)
	}
}

// eventKV lets one allocation hold an Event and its KeyValue.
type eventKV struct {
	ev mvccpb.Event
	kv mvccpb.KeyValue
}

// oneEvent is the single-change case: one allocation for the event, its KeyValue and the slice.
type oneEvent struct {
	eventKV
	list [1]*mvccpb.Event
}

// newEvents returns n fresh Events, each with a fresh Kv.
func newEvents(n int) []*mvccpb.Event {
	if n == 1 {
		o := &oneEvent{}
		o.ev.Kv = &o.kv
		o.list[0] = &o.ev
		return o.list[:]
	}
	arr := make([]eventKV, n)
	out := make([]*mvccpb.Event, n)
	for i := range arr {
		arr[i].ev.Kv = &arr[i].kv
		out[i] = &arr[i].ev
	}
	return out
}

// fillEvent makes ev the event of the change (key, v): a PUT with the full KeyValue, or a DELETE
// with {key, mod_revision}, as etcd sends them.
func fillEvent(ev *mvccpb.Event, key string, v *version, value []byte) {
	if v.tombstone() {
		ev.Type = mvccpb.Event_DELETE
		ev.Kv.Key = keyBytes(key)
		ev.Kv.ModRevision = v.mod.Main
		return
	}
	ev.Type = mvccpb.Event_PUT
	fillVersion(ev.Kv, key, v)
	ev.Kv.Value = value
}

// fillKV fills kv from v, a put version of ki. Key and Value alias the store's immutable bytes.
func fillKV(kv *mvccpb.KeyValue, ki *keyIndex, v *version, keysOnly bool) {
	fillVersion(kv, ki.key, v)
	if !keysOnly {
		kv.Value = ki.value(v)
	}
}

// fillVersion fills all of kv but the value.
func fillVersion(kv *mvccpb.KeyValue, key string, v *version) {
	kv.Key = keyBytes(key)
	kv.CreateRevision = v.create
	kv.ModRevision = v.mod.Main
	kv.Version = v.ver
	kv.Lease = v.lease
}

func newKV(ki *keyIndex, v *version, keysOnly bool) *mvccpb.KeyValue {
	kv := &mvccpb.KeyValue{}
	fillKV(kv, ki, v, keysOnly)
	return kv
}

// Changed reports whether the txn has changed anything so far, so End will bump the revision.
func (t *Txn) Changed() bool { return len(t.changes) > 0 }

// FirstRev is the lowest revision a read in this txn may ask for without ErrCompacted, as etcd
// checks it before running a write txn: the compaction revision, or -1 before the first
// compaction.
func (t *Txn) FirstRev() int64 {
	if !t.s.st.compacted {
		return -1
	}
	return t.s.st.compactRev
}
