package watch

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/basaltdb/basalt/engine/mvcc"
)

// TestHubDataDriven runs testdata/watch/*.txt against a hub driven as the server drives it:
// the test writes the store and publishes views (which, as in the server, only the next pass
// or create hands to the hub), runs the hub's passes and takes responses off one stream's
// queue as a consumer would (each reported Sent at once). Run with -rewrite to regenerate the expected output, and
// only keep a change that you have checked by hand and understand.
//
// Responses taken by one consume are printed grouped by watch ID (in ID order, each group in
// queue order): the order across watchers is not part of the contract.
func TestHubDataDriven(t *testing.T) {
	datadriven.Walk(t, "../../testdata/watch", func(t *testing.T, path string) {
		st := mvcc.New()
		h := New(nil, st.View())
		hm := &hubModel{st: st, h: h, s: h.NewStream(), latest: st.View()}
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			return hm.handle(t, d)
		})
	})
}

func (hm *hubModel) handle(t *testing.T, d *datadriven.TestData) string {
	arg := func(name, def string) string {
		for _, a := range d.CmdArgs {
			if a.Key == name && len(a.Vals) > 0 {
				return a.Vals[0]
			}
		}
		return def
	}
	num := func(name string, def int64) int64 {
		n, err := strconv.ParseInt(arg(name, strconv.FormatInt(def, 10)), 10, 64)
		if err != nil {
			t.Fatalf("%s: %s: %v", d.Pos, name, err)
		}
		return n
	}
	switch d.Cmd {
	case "put", "del":
		// Example: put k=a v=1 [n=100]   (n puts in a row, each its own revision)
		// Example: del k=a [end=c]
		for range num("n", 1) {
			txn := hm.st.Begin()
			if d.Cmd == "put" {
				txn.Put([]byte(arg("k", "")), []byte(arg("v", "")), 0, false)
			} else {
				txn.DeleteRange([]byte(arg("k", "")), []byte(arg("end", "")))
			}
			txn.End()
		}
		hm.latest = hm.st.View()
		return fmt.Sprintf("rev=%d\n", hm.st.Rev())
	case "txn":
		// Example: txn put=a,b del=c   (puts then deletes, one revision)
		txn := hm.st.Begin()
		for _, k := range strings.Split(arg("put", ""), ",") {
			if k != "" {
				txn.Put([]byte(k), []byte("t"), 0, false)
			}
		}
		for _, k := range strings.Split(arg("del", ""), ",") {
			if k != "" {
				txn.DeleteRange([]byte(k), nil)
			}
		}
		txn.End()
		hm.latest = hm.st.View()
		return fmt.Sprintf("rev=%d\n", hm.st.Rev())
	case "compact":
		// Example: compact rev=5 [ungated]
		// Compacts and finishes physical compaction. As the server's Compact RPC does (waitRev),
		// it first lets the hub catch up with the writes, unless ungated.
		if !slices.ContainsFunc(d.CmdArgs, func(a datadriven.CmdArg) bool { return a.Key == "ungated" }) {
			hm.pass()
		}
		if err := hm.st.Compact(num("rev", 0)); err != nil {
			return "error: " + err.Error() + "\n"
		}
		for !hm.st.CompactStep(1000) {
		}
		hm.latest = hm.st.View()
		return fmt.Sprintf("compact=%d\n", hm.st.CompactRev())
	case "pass":
		// Example: pass   (one turn of the hub's goroutine)
		hm.pass()
		return hm.state()
	case "watch":
		// Example: watch k=a [end=c] [start=3] [id=5] [noput] [nodelete]
		r := &pb.WatchCreateRequest{Key: []byte(arg("k", "")), RangeEnd: []byte(arg("end", "")),
			StartRevision: num("start", 0), WatchId: num("id", 0)}
		for _, a := range d.CmdArgs {
			switch a.Key {
			case "noput":
				r.Filters = append(r.Filters, pb.WatchCreateRequest_NOPUT)
			case "nodelete":
				r.Filters = append(r.Filters, pb.WatchCreateRequest_NODELETE)
			}
		}
		hm.h.Publish(hm.latest) // as the server's create does
		hm.h.Create(hm.s, r)
		return hm.state()
	case "cancel":
		// Example: cancel id=1
		return fmt.Sprintf("answered=%t\n", hm.h.Cancel(hm.s, num("id", 0)))
	case "progress":
		// Example: progress
		return fmt.Sprintf("answered=%t\n", hm.h.Progress(hm.s))
	case "consume":
		// Example: consume [n=10]   (takes up to n responses, all by default)
		groups := map[int64][]string{}
		for _, r := range hm.h.Take(hm.s, int(num("n", 1<<30))) {
			hm.h.Sent(r)
			groups[r.Resp.WatchId] = append(groups[r.Resp.WatchId], fmtHubResp(r.Resp))
		}
		ids := make([]int64, 0, len(groups))
		for id := range groups {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		var b strings.Builder
		for _, id := range ids {
			for _, s := range groups[id] {
				b.WriteString(s + "\n")
			}
		}
		return b.String() + hm.state()
	}
	t.Fatalf("%s: unknown command %q", d.Pos, d.Cmd)
	return ""
}

// state prints the hub's revision and which watchers are behind, and the queue length.
func (hm *hubModel) state() string {
	return fmt.Sprintf("hub rev=%d unsynced=[%s] queued=%d\n", hm.h.Rev(), strings.Join(hm.h.Behind(), " "), hm.s.Queued())
}

// fmtHubResp prints a response with its events' revisions folded into runs.
func fmtHubResp(r *pb.WatchResponse) string {
	var b strings.Builder
	fmt.Fprintf(&b, "id=%d rev=%d", r.WatchId, r.Header.GetRevision())
	if r.Created {
		b.WriteString(" created")
	}
	if r.Canceled {
		b.WriteString(" canceled")
	}
	if r.CompactRevision != 0 {
		fmt.Fprintf(&b, " compact=%d", r.CompactRevision)
	}
	if r.CancelReason != "" {
		fmt.Fprintf(&b, " reason=%q", r.CancelReason)
	}
	if len(r.Events) > 8 {
		fmt.Fprintf(&b, " | %d events, revisions %d..%d", len(r.Events), r.Events[0].Kv.ModRevision, r.Events[len(r.Events)-1].Kv.ModRevision)
		return b.String()
	}
	for _, ev := range r.Events {
		fmt.Fprintf(&b, " | %s %s@%d", ev.Type, ev.Kv.Key, ev.Kv.ModRevision)
	}
	return b.String()
}
