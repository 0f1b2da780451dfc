package mvcc

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// TestDataDriven runs testdata/mvcc/*.txt. Run with -rewrite to regenerate the expected output,
// and only keep a change that you have checked by hand and understand.
//
// After every command the harness checks the store's invariants, and it cross-checks: a range on
// the View against the same range in an empty Txn, and hash/snapshot against a restored copy.
func TestDataDriven(t *testing.T) {
	datadriven.Walk(t, "../../testdata/mvcc", func(t *testing.T, path string) {
		h := &harness{s: New(), views: map[string]*View{}}
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			out := h.handle(t, d.Cmd, args(d.CmdArgs), d.Input)
			if err := checkInvariants(h.s); err != nil {
				t.Fatalf("%s: invariants: %v\n%s", d.Pos, err, strings.Join(dumpKeys(&h.s.st), "\n"))
			}
			return out
		})
	})
}

type harness struct {
	s     *Store
	views map[string]*View
}

func (h *harness) handle(t *testing.T, cmd string, a args, input string) string {
	switch cmd {
	case "reset":
		// Example: reset
		h.s, h.views = New(), map[string]*View{}
		return "ok"
	case "put", "del":
		// Example: put k=a v=1 lease=5
		// Example: del k=a end=c
		txn := h.s.Begin()
		out := h.op(t, txn, cmd, a)
		return out + h.end(txn)
	case "txn":
		// Example:
		//   txn
		//   put k=a v=1
		//   del k=b
		//   range k=a end=z
		txn := h.s.Begin()
		var b strings.Builder
		for _, line := range strings.Split(input, "\n") {
			c, ca, err := datadriven.ParseLine(line)
			if err != nil {
				t.Fatal(err)
			}
			if c == "" {
				continue
			}
			fmt.Fprintf(&b, "%s: %s", c, h.op(t, txn, c, args(ca)))
		}
		return b.String() + h.end(txn)
	case "range":
		// Example: range k=a end=z rev=3 limit=2 sort=desc target=mod keys-only count-only
		//          min-mod=2 max-mod=5 min-create=2 max-create=5 view=v1
		v := h.view(t, a)
		key, end, opts := a.str(t, "k", ""), a.str(t, "end", ""), a.rangeOptions(t)
		res, err := v.Range([]byte(key), []byte(end), opts)
		out := fmtRange(res, err)
		if !a.has("view") {
			txn := h.s.Begin()
			tres, terr := txn.Range([]byte(key), []byte(end), opts)
			if evs := txn.End(); evs != nil {
				t.Fatalf("a read-only txn produced events %v", evs)
			}
			if tout := fmtRange(tres, terr); tout != out {
				t.Fatalf("View.Range and Txn.Range differ:\n%s\nvs\n%s", out, tout)
			}
		}
		return out
	case "compact":
		// Example: compact rev=5
		if err := h.s.Compact(a.int(t, "rev", 0)); err != nil {
			return "error: " + err.Error() + "\n"
		}
		return fmt.Sprintf("ok compact=%d done=%v\n", h.s.CompactRev(), h.s.compactDone())
	case "step":
		// Example: step n=10
		return fmt.Sprintf("done=%v\n", h.s.CompactStep(int(a.int(t, "n", 1))))
	case "dump":
		// Example: dump
		lines := append([]string{fmt.Sprintf("rev=%d compact=%d", h.s.Rev(), h.s.CompactRev())},
			dumpKeys(&h.s.st)...)
		return strings.Join(append(lines, dumpHist(&h.s.st)), "\n") + "\n"
	case "view":
		// Example: view name=v1
		v := h.s.View()
		h.views[a.str(t, "name", "")] = v
		return fmt.Sprintf("ok rev=%d compact=%d\n", v.Rev(), v.CompactRev())
	case "events":
		// Example: events from=3 max=10 view=v1
		evs, next, err := h.view(t, a).Events(a.int(t, "from", 0), int(a.int(t, "max", 1000)))
		if err != nil {
			return "error: " + err.Error() + "\n"
		}
		return fmt.Sprintf("next=%d\n%s", next, fmtEvents(evs))
	case "hash":
		// Example: hash rev=5 view=v1
		v := h.view(t, a)
		rev := a.int(t, "rev", 0)
		hash, compact, err := v.HashKV(rev)
		if err != nil {
			return "error: " + err.Error() + "\n"
		}
		if rh, _, rerr := restored(t, v).View().HashKV(rev); rerr != nil || rh != hash {
			t.Fatalf("hash %08x, after a snapshot round trip %08x (%v)", hash, rh, rerr)
		}
		return fmt.Sprintf("hash=%08x compact=%d\n", hash, compact)
	case "snapshot":
		// Example: snapshot
		// Replaces the store with Restore(WriteTo(View())), which is fully compacted.
		var buf bytes.Buffer
		v := h.s.View()
		if _, err := v.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		size := buf.Len()
		h.s = restored(t, v)
		return fmt.Sprintf("ok bytes=%d rev=%d compact=%d\n", size, h.s.Rev(), h.s.CompactRev())
	}
	t.Fatalf("unknown command %q", cmd)
	return ""
}

// restored returns Restore(WriteTo(v)), checking that the copy writes the same bytes.
func restored(t *testing.T, v *View) *Store {
	var buf bytes.Buffer
	if _, err := v.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	orig := bytes.Clone(buf.Bytes())
	s, err := Restore(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Fatalf("Restore left %d bytes unread", buf.Len())
	}
	if err := checkInvariants(s); err != nil {
		t.Fatalf("restored store: %v", err)
	}
	var again bytes.Buffer
	if _, err := s.View().WriteTo(&again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(orig, again.Bytes()) {
		t.Fatalf("restored store writes a different snapshot")
	}
	return s
}

func (h *harness) view(t *testing.T, a args) *View {
	if !a.has("view") {
		return h.s.View()
	}
	v, ok := h.views[a.str(t, "view", "")]
	if !ok {
		t.Fatalf("no view %q", a.str(t, "view", ""))
	}
	return v
}

// op runs one write or read inside txn.
func (h *harness) op(t *testing.T, txn *Txn, cmd string, a args) string {
	switch cmd {
	case "put":
		prev := txn.Put([]byte(a.str(t, "k", "")), []byte(a.str(t, "v", "")), a.int(t, "lease", 0), true)
		if prev == nil {
			return "prev=none\n"
		}
		return "prev=" + fmtKV(prev) + "\n"
	case "del":
		deleted := txn.DeleteRange([]byte(a.str(t, "k", "")), []byte(a.str(t, "end", "")))
		var b strings.Builder
		fmt.Fprintf(&b, "deleted=%d\n", len(deleted))
		for _, kv := range deleted {
			fmt.Fprintf(&b, "  %s\n", fmtKV(kv))
		}
		return b.String()
	case "range":
		res, err := txn.Range([]byte(a.str(t, "k", "")), []byte(a.str(t, "end", "")), a.rangeOptions(t))
		return fmtRange(res, err)
	}
	t.Fatalf("unknown txn op %q", cmd)
	return ""
}

func (h *harness) end(txn *Txn) string {
	evs := txn.End()
	return fmt.Sprintf("rev=%d\n%s", h.s.Rev(), fmtEvents(evs))
}

func fmtKV(kv *mvccpb.KeyValue) string {
	s := fmt.Sprintf("%s=%s c=%d m=%d v=%d", fmtKey(string(kv.Key)), fmtKey(string(kv.Value)),
		kv.CreateRevision, kv.ModRevision, kv.Version)
	if kv.Lease != 0 {
		s += fmt.Sprintf(" l=%d", kv.Lease)
	}
	return s
}

func fmtEvents(evs []*mvccpb.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		if ev.Type == mvccpb.Event_DELETE {
			fmt.Fprintf(&b, "  DELETE %s m=%d\n", fmtKey(string(ev.Kv.Key)), ev.Kv.ModRevision)
		} else {
			fmt.Fprintf(&b, "  PUT %s\n", fmtKV(ev.Kv))
		}
	}
	return b.String()
}

func fmtRange(res RangeResult, err error) string {
	if err != nil {
		return "error: " + err.Error() + "\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "rev=%d count=%d more=%v\n", res.Rev, res.Count, res.More)
	for _, kv := range res.KVs {
		fmt.Fprintf(&b, "  %s\n", fmtKV(kv))
	}
	return b.String()
}

type args []datadriven.CmdArg

func (a args) has(key string) bool {
	for _, c := range a {
		if c.Key == key {
			return true
		}
	}
	return false
}

// str returns the argument's value with Go escapes (\x00) interpreted.
func (a args) str(t *testing.T, key, def string) string {
	for _, c := range a {
		if c.Key != key {
			continue
		}
		if len(c.Vals) != 1 {
			t.Fatalf("argument %s needs one value", key)
		}
		s, err := strconv.Unquote(`"` + c.Vals[0] + `"`)
		if err != nil {
			t.Fatalf("argument %s=%s: %v", key, c.Vals[0], err)
		}
		return s
	}
	return def
}

func (a args) int(t *testing.T, key string, def int64) int64 {
	if !a.has(key) {
		return def
	}
	n, err := strconv.ParseInt(a.str(t, key, ""), 10, 64)
	if err != nil {
		t.Fatalf("argument %s: %v", key, err)
	}
	return n
}

func (a args) rangeOptions(t *testing.T) RangeOptions {
	o := RangeOptions{
		Rev:          a.int(t, "rev", 0),
		Limit:        a.int(t, "limit", 0),
		CountOnly:    a.has("count-only"),
		KeysOnly:     a.has("keys-only"),
		MinModRev:    a.int(t, "min-mod", 0),
		MaxModRev:    a.int(t, "max-mod", 0),
		MinCreateRev: a.int(t, "min-create", 0),
		MaxCreateRev: a.int(t, "max-create", 0),
	}
	orders := map[string]SortOrder{"none": SortNone, "asc": SortAscend, "desc": SortDescend, "bogus": 7}
	targets := map[string]SortTarget{"key": SortByKey, "version": SortByVersion, "create": SortByCreate,
		"mod": SortByMod, "value": SortByValue, "bogus": 9}
	if a.has("sort") {
		order, ok := orders[a.str(t, "sort", "")]
		if !ok {
			t.Fatalf("unknown sort %q", a.str(t, "sort", ""))
		}
		o.SortOrder = order
	}
	if a.has("target") {
		target, ok := targets[a.str(t, "target", "")]
		if !ok {
			t.Fatalf("unknown target %q", a.str(t, "target", ""))
		}
		o.SortTarget = target
	}
	return o
}
