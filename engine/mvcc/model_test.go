package mvcc

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"pgregory.net/rapid"
)

// The model: every version of every key ever written, never dropped, plus the two revisions.
// Compaction in the model is only the compact revision; everything else is derived by brute
// force straight from etcd's documented semantics.

type mVersion struct {
	key    string
	value  string
	mod    Revision
	create int64
	ver    int64 // 0: tombstone
	lease  int64
}

type model struct {
	rev, compactRev int64
	// compacted is set by the first compaction: etcd's compaction revision starts below 0.
	compacted bool
	vers      map[string][]mVersion
}

// latest returns the key's newest version with main <= rev that is a put, or nil.
func (m *model) at(key string, rev int64) *mVersion {
	var found *mVersion
	for i := range m.vers[key] {
		if v := &m.vers[key][i]; v.mod.Main <= rev {
			found = v
		}
	}
	if found == nil || found.ver == 0 {
		return nil
	}
	return found
}

func (m *model) sortedKeys() []string {
	keys := make([]string, 0, len(m.vers))
	for k := range m.vers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func inRange(k, key, end string) bool {
	switch {
	case end == "":
		return k == key
	case end == "\x00":
		return k >= key
	default:
		return key <= k && k < end
	}
}

// put applies a put at (rev, sub) in the model.
func (m *model) put(key, value string, lease int64, r Revision) *mVersion {
	prev := m.at(key, r.Main)
	v := mVersion{key: key, value: value, mod: r, create: r.Main, ver: 1, lease: lease}
	if prev != nil {
		v.create, v.ver = prev.create, prev.ver+1
	}
	var out *mVersion
	if prev != nil {
		p := *prev
		out = &p
	}
	m.vers[key] = append(m.vers[key], v)
	return out
}

func (m *model) del(key, end string, rev int64, sub *int64) []mVersion {
	var out []mVersion
	for _, k := range m.sortedKeys() {
		if !inRange(k, key, end) {
			continue
		}
		if v := m.at(k, rev); v != nil {
			out = append(out, *v)
			m.vers[k] = append(m.vers[k], mVersion{key: k, mod: Revision{rev, *sub}})
			*sub++
		}
	}
	return out
}

// rangeAt is Range on a store whose current revision is cur and compact revision compact.
func (m *model) rangeAt(cur, compact int64, key, end string, o RangeOptions) (RangeResult, []mVersion, error) {
	res := RangeResult{Rev: cur}
	rev := o.Rev
	if rev > cur {
		return res, nil, ErrFutureRev
	}
	if rev <= 0 {
		rev = cur
	}
	if rev < compact {
		return res, nil, ErrCompacted
	}
	var all []mVersion
	for _, k := range m.sortedKeys() {
		if !inRange(k, key, end) {
			continue
		}
		if v := m.at(k, rev); v != nil {
			all = append(all, *v)
		}
	}
	res.Count = int64(len(all))
	if o.CountOnly {
		return res, nil, nil
	}
	filtered := o.MaxModRev != 0 || o.MinModRev != 0 || o.MaxCreateRev != 0 || o.MinCreateRev != 0
	defaultOrder := o.SortOrder == SortNone || (o.SortTarget == SortByKey && o.SortOrder == SortAscend)
	if defaultOrder && !filtered && o.Limit > 0 && int64(len(all)) > o.Limit+1 {
		all = all[:o.Limit+1] // etcd reads Limit+1 keys in key order, then sorts those
	}
	var kept []mVersion
	for _, v := range all {
		if o.MaxModRev != 0 && v.mod.Main > o.MaxModRev || o.MinModRev != 0 && v.mod.Main < o.MinModRev ||
			o.MaxCreateRev != 0 && v.create > o.MaxCreateRev || o.MinCreateRev != 0 && v.create < o.MinCreateRev {
			continue
		}
		kept = append(kept, v)
	}
	order := o.SortOrder
	if o.SortTarget != SortByKey && order == SortNone {
		order = SortAscend
	}
	if order != SortNone && !(o.SortTarget == SortByKey && order == SortAscend) {
		// etcd's comparisons with sort.Sort, whose order of ties is part of what etcd answers.
		less := func(a, b mVersion) bool {
			switch o.SortTarget {
			case SortByKey:
				return a.key < b.key
			case SortByVersion:
				return a.ver-b.ver < 0
			case SortByCreate:
				return a.create-b.create < 0
			case SortByMod:
				return a.mod.Main-b.mod.Main < 0
			default:
				return a.value < b.value
			}
		}
		var sorter sort.Interface = mSort{kept, less}
		if order == SortDescend {
			sorter = sort.Reverse(sorter)
		}
		sort.Sort(sorter)
	}
	if o.Limit > 0 && int64(len(kept)) > o.Limit {
		kept, res.More = kept[:o.Limit], true
	}
	return res, kept, nil
}

// events returns every change with main in [from, rev], grouped in whole revisions, at most max
// events unless the first revision alone has more, and the first revision not returned.
func (m *model) events(from, rev int64, max int) ([]mVersion, int64) {
	var all []mVersion
	for _, k := range m.sortedKeys() {
		for _, v := range m.vers[k] {
			if v.mod.Main >= from && v.mod.Main <= rev {
				all = append(all, v)
			}
		}
	}
	slices.SortFunc(all, func(a, b mVersion) int {
		if a.mod.less(b.mod) {
			return -1
		}
		return 1
	})
	var out []mVersion
	for i := 0; i < len(all); {
		j := i
		for j < len(all) && all[j].mod.Main == all[i].mod.Main {
			j++
		}
		if len(out) > 0 && len(out)+j-i > max {
			return out, all[i].mod.Main
		}
		out = append(out, all[i:j]...)
		i = j
	}
	if from > rev {
		return out, from
	}
	return out, rev + 1
}

// kvString renders a KeyValue and a model version the same way for comparison.
func kvString(kv *mvccpb.KeyValue) string {
	return fmt.Sprintf("%q=%q c%d m%d v%d l%d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
}

func mvString(v mVersion, keysOnly bool) string {
	val := v.value
	if keysOnly {
		val = ""
	}
	return fmt.Sprintf("%q=%q c%d m%d v%d l%d", v.key, val, v.create, v.mod.Main, v.ver, v.lease)
}

func eventString(ev *mvccpb.Event) string {
	if ev.Type == mvccpb.Event_DELETE {
		if ev.Kv.Value != nil || ev.Kv.CreateRevision != 0 || ev.Kv.Version != 0 || ev.Kv.Lease != 0 {
			return "bad delete event " + kvString(ev.Kv)
		}
		return fmt.Sprintf("DELETE %q m%d", ev.Kv.Key, ev.Kv.ModRevision)
	}
	return "PUT " + kvString(ev.Kv)
}

func mEventString(v mVersion) string {
	if v.ver == 0 {
		return fmt.Sprintf("DELETE %q m%d", v.key, v.mod.Main)
	}
	return "PUT " + mvString(v, false)
}

var (
	modelKeys   = []string{"a", "ab", "b", "b\x00", "c", "d", "\xff"}
	modelEnds   = []string{"", "", "\x00", "a", "b", "b\x00", "c", "e", "\xff\xff"}
	modelValues = []string{"", "x", "y", "zz"}
)

// savedView is a View with what it showed when it was taken.
type savedView struct {
	v          *View
	rev, cmp   int64
	hash       uint32
	hashedRev  int64
	compactRev int64
}

type modelTest struct {
	m *model
	// a and b are two stores with the same logical history and different physical compaction
	// progress: a steps with random budgets, b only when told, with other budgets.
	a, b  *Store
	views []savedView
}

func (mt *modelTest) check(t *rapid.T) {
	for _, s := range []*Store{mt.a, mt.b} {
		if err := checkInvariants(s); err != nil {
			t.Fatalf("invariants: %v", err)
		}
		if s.Rev() != mt.m.rev || s.CompactRev() != mt.m.compactRev {
			t.Fatalf("store rev %d/%d, model %d/%d", s.Rev(), s.CompactRev(), mt.m.rev, mt.m.compactRev)
		}
	}
}

func drawOptions(t *rapid.T, m *model) RangeOptions {
	o := RangeOptions{}
	if rapid.Bool().Draw(t, "atRev") {
		o.Rev = rapid.Int64Range(m.compactRev-2, m.rev+2).Draw(t, "rev")
	}
	o.Limit = rapid.SampledFrom([]int64{0, 0, 1, 2, 3, -1}).Draw(t, "limit")
	o.CountOnly = rapid.IntRange(0, 7).Draw(t, "countOnly") == 0
	o.KeysOnly = rapid.IntRange(0, 3).Draw(t, "keysOnly") == 0
	if rapid.Bool().Draw(t, "sorted") {
		o.SortOrder = SortOrder(rapid.IntRange(0, 2).Draw(t, "order"))
		o.SortTarget = SortTarget(rapid.IntRange(0, 4).Draw(t, "target"))
	}
	if rapid.IntRange(0, 3).Draw(t, "filtered") == 0 {
		filter := func(label string) int64 {
			if rapid.Bool().Draw(t, label+"On") {
				return rapid.Int64Range(1, m.rev+1).Draw(t, label)
			}
			return 0
		}
		o.MinModRev, o.MaxModRev = filter("minMod"), filter("maxMod")
		o.MinCreateRev, o.MaxCreateRev = filter("minCreate"), filter("maxCreate")
	}
	return o
}

func compareRange(t *rapid.T, what string, got RangeResult, gerr error, want RangeResult, wantKVs []mVersion, werr error, keysOnly bool) {
	if !errors.Is(gerr, werr) || (gerr == nil) != (werr == nil) {
		t.Fatalf("%s: error %v, model %v", what, gerr, werr)
	}
	if gerr != nil {
		return
	}
	if got.Rev != want.Rev || got.Count != want.Count || got.More != want.More || len(got.KVs) != len(wantKVs) {
		t.Fatalf("%s: rev %d count %d more %v n %d; model rev %d count %d more %v n %d", what,
			got.Rev, got.Count, got.More, len(got.KVs), want.Rev, want.Count, want.More, len(wantKVs))
	}
	for i := range wantKVs {
		if g, w := kvString(got.KVs[i]), mvString(wantKVs[i], keysOnly); g != w {
			t.Fatalf("%s: kv %d is %s, model %s", what, i, g, w)
		}
	}
}

func (mt *modelTest) write(t *rapid.T, ops int) {
	ta, tb := mt.a.Begin(), mt.b.Begin()
	m := mt.m
	next := m.rev + 1
	sub := int64(0)
	for range ops {
		switch rapid.IntRange(0, 3).Draw(t, "op") {
		case 0, 1:
			k := rapid.SampledFrom(modelKeys).Draw(t, "key")
			v := rapid.SampledFrom(modelValues).Draw(t, "value")
			lease := rapid.Int64Range(0, 2).Draw(t, "lease")
			want := m.put(k, v, lease, Revision{next, sub})
			sub++
			for _, txn := range []*Txn{ta, tb} {
				prev := txn.Put([]byte(k), []byte(v), lease, true)
				if (prev == nil) != (want == nil) || prev != nil && kvString(prev) != mvString(*want, false) {
					t.Fatalf("put %q prev %v, model %v", k, prev, want)
				}
			}
		case 2:
			k := rapid.SampledFrom(modelKeys).Draw(t, "key")
			end := rapid.SampledFrom(modelEnds).Draw(t, "end")
			want := m.del(k, end, next, &sub)
			for _, txn := range []*Txn{ta, tb} {
				got := txn.DeleteRange([]byte(k), []byte(end))
				if len(got) != len(want) {
					t.Fatalf("delete [%q, %q): %d deleted, model %d", k, end, len(got), len(want))
				}
				for i := range want {
					if kvString(got[i]) != mvString(want[i], false) {
						t.Fatalf("delete: prev %d is %s, model %s", i, kvString(got[i]), mvString(want[i], false))
					}
				}
			}
		case 3:
			k := rapid.SampledFrom(modelKeys).Draw(t, "key")
			end := rapid.SampledFrom(modelEnds).Draw(t, "end")
			o := drawOptions(t, m)
			cur := m.rev
			if sub > 0 {
				cur++
			}
			want, wantKVs, werr := m.rangeAt(cur, m.compactRev, k, end, o)
			got, gerr := ta.Range([]byte(k), []byte(end), o)
			compareRange(t, "txn range", got, gerr, want, wantKVs, werr, o.KeysOnly)
		}
	}
	evA, evB := ta.End(), tb.End()
	if sub > 0 {
		m.rev++
	}
	wantEvs, _ := m.events(next, next, 1<<30)
	if len(evA) != len(wantEvs) || len(evB) != len(wantEvs) {
		t.Fatalf("txn events %d/%d, model %d", len(evA), len(evB), len(wantEvs))
	}
	for i := range wantEvs {
		if g, w := eventString(evA[i]), mEventString(wantEvs[i]); g != w || eventString(evB[i]) != w {
			t.Fatalf("event %d: %s, model %s", i, g, w)
		}
	}
}

func (mt *modelTest) hashes(t *rapid.T, rev int64) {
	ha, ca, ea := mt.a.View().HashKV(rev)
	hb, cb, eb := mt.b.View().HashKV(rev)
	if ha != hb || ca != cb || !errors.Is(ea, eb) || (ea == nil) != (eb == nil) {
		t.Fatalf("HashKV(%d): a %08x %d %v, b %08x %d %v", rev, ha, ca, ea, hb, cb, eb)
	}
	var wantErr error
	switch {
	case rev > 0 && rev < mt.m.compactRev:
		wantErr = ErrCompacted
	case rev > mt.m.rev:
		wantErr = ErrFutureRev
	}
	if !errors.Is(ea, wantErr) || (ea == nil) != (wantErr == nil) {
		t.Fatalf("HashKV(%d) error %v, want %v", rev, ea, wantErr)
	}
}

func snapshotBytes(t *rapid.T, v *View) []byte {
	var buf bytes.Buffer
	n, err := v.WriteTo(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WriteTo: %d, %v (wrote %d)", n, err, buf.Len())
	}
	return buf.Bytes()
}

// TestModel runs random histories against the model. Each check runs modelRepeats rounds of
// about -rapid.steps actions, so histories grow long enough for compaction to matter; use
// -rapid.checks (or RAPID_CHECKS) for longer sweeps.
func TestModel(t *testing.T) {
	const modelRepeats = 20
	rapid.Check(t, func(t *rapid.T) {
		mt := &modelTest{m: &model{rev: 1, vers: map[string][]mVersion{}}, a: New(), b: New()}
		for range modelRepeats {
			mt.repeat(t)
		}
	})
}

func (mt *modelTest) repeat(t *rapid.T) {
	t.Repeat(map[string]func(*rapid.T){
		"put": func(t *rapid.T) { mt.write(t, 1) },
		"txn": func(t *rapid.T) { mt.write(t, rapid.IntRange(0, 5).Draw(t, "ops")) },
		"compact": func(t *rapid.T) {
			rev := rapid.Int64Range(mt.m.compactRev-1, mt.m.rev+1).Draw(t, "rev")
			var want error
			switch {
			case rev < 0 || (mt.m.compacted && rev <= mt.m.compactRev):
				want = ErrCompacted
			case rev > mt.m.rev:
				want = ErrFutureRev
			default:
				mt.m.compactRev, mt.m.compacted = rev, true
			}
			for _, s := range []*Store{mt.a, mt.b} {
				if err := s.Compact(rev); !errors.Is(err, want) || (err == nil) != (want == nil) {
					t.Fatalf("Compact(%d) = %v, want %v", rev, err, want)
				}
			}
		},
		"stepA": func(t *rapid.T) { mt.a.CompactStep(rapid.IntRange(1, 6).Draw(t, "n")) },
		"stepB": func(t *rapid.T) {
			if rapid.Bool().Draw(t, "all") {
				for !mt.b.CompactStep(1000) {
				}
				return
			}
			mt.b.CompactStep(rapid.IntRange(1, 30).Draw(t, "n"))
		},
		"range": func(t *rapid.T) {
			k := rapid.SampledFrom(modelKeys).Draw(t, "key")
			end := rapid.SampledFrom(modelEnds).Draw(t, "end")
			o := drawOptions(t, mt.m)
			want, wantKVs, werr := mt.m.rangeAt(mt.m.rev, mt.m.compactRev, k, end, o)
			for _, s := range []*Store{mt.a, mt.b} {
				got, gerr := s.View().Range([]byte(k), []byte(end), o)
				compareRange(t, "view range", got, gerr, want, wantKVs, werr, o.KeysOnly)
			}
		},
		"view": func(t *rapid.T) {
			v := mt.a.View()
			rev := rapid.Int64Range(0, mt.m.rev).Draw(t, "hashRev")
			h, _, err := v.HashKV(rev)
			if err != nil {
				rev, h = 0, 0
			}
			mt.views = append(mt.views, savedView{v: v, rev: mt.m.rev, cmp: mt.m.compactRev,
				hash: h, hashedRev: rev, compactRev: mt.m.compactRev})
		},
		"checkView": func(t *rapid.T) {
			if len(mt.views) == 0 {
				t.Skip("no view")
			}
			sv := rapid.SampledFrom(mt.views).Draw(t, "view")
			if sv.v.Rev() != sv.rev || sv.v.CompactRev() != sv.cmp {
				t.Fatalf("view rev %d/%d changed from %d/%d", sv.v.Rev(), sv.v.CompactRev(), sv.rev, sv.cmp)
			}
			k := rapid.SampledFrom(modelKeys).Draw(t, "key")
			end := rapid.SampledFrom(modelEnds).Draw(t, "end")
			o := drawOptions(t, mt.m)
			want, wantKVs, werr := mt.m.rangeAt(sv.rev, sv.cmp, k, end, o)
			got, gerr := sv.v.Range([]byte(k), []byte(end), o)
			compareRange(t, "old view range", got, gerr, want, wantKVs, werr, o.KeysOnly)
			if sv.hashedRev != 0 {
				if h, _, err := sv.v.HashKV(sv.hashedRev); err != nil || h != sv.hash {
					t.Fatalf("old view HashKV(%d) = %08x %v, was %08x", sv.hashedRev, h, err, sv.hash)
				}
			}
			from := rapid.Int64Range(sv.cmp+1, sv.rev+1).Draw(t, "from")
			mt.checkEvents(t, sv.v, from, sv.rev)
		},
		"events": func(t *rapid.T) {
			from := rapid.Int64Range(mt.m.compactRev-1, mt.m.rev+2).Draw(t, "from")
			mt.checkEvents(t, mt.a.View(), from, mt.m.rev)
		},
		"hash": func(t *rapid.T) {
			mt.hashes(t, rapid.Int64Range(mt.m.compactRev-1, mt.m.rev+1).Draw(t, "rev"))
		},
		"snapshot": func(t *rapid.T) {
			sa, sb := snapshotBytes(t, mt.a.View()), snapshotBytes(t, mt.b.View())
			if !bytes.Equal(sa, sb) {
				t.Fatalf("equal logical states wrote different snapshots")
			}
			r, err := Restore(bytes.NewReader(sa))
			if err != nil {
				t.Fatalf("Restore: %v", err)
			}
			if !bytes.Equal(snapshotBytes(t, r.View()), sa) {
				t.Fatalf("the restored store writes a different snapshot")
			}
			ha, _, _ := mt.a.View().HashKV(0)
			if hr, _, _ := r.View().HashKV(0); hr != ha {
				t.Fatalf("restored hash %08x, original %08x", hr, ha)
			}
			// Carry on with the restored store in place of a.
			mt.a = r
		},
		"": func(t *rapid.T) { mt.check(t) },
	})
}

func (mt *modelTest) checkEvents(t *rapid.T, v *View, from, rev int64) {
	max := rapid.IntRange(0, 6).Draw(t, "max")
	got, next, err := v.Events(from, max)
	if from < v.CompactRev() || (from == v.CompactRev() && !v.holdsChangesOf(from)) {
		if !errors.Is(err, ErrCompacted) {
			t.Fatalf("Events(%d) below compact %d: %v", from, v.CompactRev(), err)
		}
		return
	}
	if err != nil {
		t.Fatalf("Events(%d): %v", from, err)
	}
	want, wantNext := mt.m.events(from, rev, max)
	if next != wantNext || len(got) != len(want) {
		t.Fatalf("Events(%d, %d): next %d n %d, model next %d n %d", from, max, next, len(got), wantNext, len(want))
	}
	for i := range want {
		if g, w := eventString(got[i]), mEventString(want[i]); g != w {
			t.Fatalf("Events(%d): event %d %s, model %s", from, i, g, w)
		}
	}
}

type mSort struct {
	vs   []mVersion
	less func(a, b mVersion) bool
}

func (s mSort) Len() int           { return len(s.vs) }
func (s mSort) Swap(i, j int)      { s.vs[i], s.vs[j] = s.vs[j], s.vs[i] }
func (s mSort) Less(i, j int) bool { return s.less(s.vs[i], s.vs[j]) }
