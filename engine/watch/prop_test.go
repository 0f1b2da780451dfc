package watch

import (
	"bytes"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"pgregory.net/rapid"

	"github.com/basaltdb/basalt/engine/mvcc"
)

// hubClient is what the property test knows of one watcher: what it asked for and what the
// consumer has taken off the stream for it.
type hubClient struct {
	id              int64
	key, end        []byte // as the hub stores them (end nil: one key; empty: from key)
	from            int64  // the first revision it must see
	noPut, noDelete bool
	created         bool
	got             []*mvccpb.Event
	compacted       int64 // compact_revision of its cancel, 0 if none
	canceled        bool
}

func (c *hubClient) wants(ev *mvccpb.Event) bool {
	w := watcher{key: c.key, end: c.end}
	return ev.Kv.ModRevision >= c.from && w.matches(ev.Kv.Key) &&
		!(c.noPut && ev.Type == mvccpb.Event_PUT) && !(c.noDelete && ev.Type == mvccpb.Event_DELETE)
}

// hubModel drives a hub from a store the test writes, with a consumer that
// takes responses off the stream at its own pace, and checks each watcher against the log of
// every event: nothing lost, duplicated or reordered, whole revisions, created first, a
// compaction cancel only when its next revision is really gone, and progress promises kept.
type hubModel struct {
	st      *mvcc.Store
	h       *Hub
	s       *Stream
	all     []*mvccpb.Event // every event, in order
	clients map[int64]*hubClient
	// latest is the newest view published; as in the server, the hub gets it at its next pass
	// (or create).
	latest *mvcc.View
}

var hubKeys = []string{"a", "b", "c", "d"}

func TestHubProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		st := mvcc.New()
		hm := &hubModel{st: st, h: New(nil, st.View()), clients: map[int64]*hubClient{}, latest: st.View()}
		hm.s = hm.h.NewStream()
		t.Repeat(map[string]func(*rapid.T){
			"write":   hm.write,
			"compact": hm.compact,
			"create":  hm.create,
			"cancel":  hm.cancel,
			"consume": func(t *rapid.T) { hm.consume(t, rapid.IntRange(1, 300).Draw(t, "n")) },
			"progress": func(t *rapid.T) {
				hm.h.Progress(hm.s)
			},
			"": func(t *rapid.T) {},
		})
		// Drain: the consumer reads everything until every watcher is synced and the queue empty.
		for range 1000 {
			hm.pass()
			if hm.s.Queued() == 0 && hm.h.Unsynced() == 0 {
				break
			}
			hm.consume(t, 1<<20)
		}
		if hm.s.Queued() != 0 || hm.h.Unsynced() != 0 {
			t.Fatalf("not drained: %d queued, %d unsynced", hm.s.Queued(), hm.h.Unsynced())
		}
		for _, c := range hm.clients {
			hm.check(t, c, hm.st.Rev())
		}
	})
}

// pass is what the server's hub goroutine does when woken: hand the hub the latest view and
// sync.
func (hm *hubModel) pass() {
	hm.h.Publish(hm.latest)
	hm.h.Sync()
}

func (hm *hubModel) write(t *rapid.T) {
	for range rapid.IntRange(1, 200).Draw(t, "txns") {
		txn := hm.st.Begin()
		for range rapid.IntRange(1, 3).Draw(t, "ops") {
			k := []byte(rapid.SampledFrom(hubKeys).Draw(t, "key"))
			if rapid.IntRange(0, 3).Draw(t, "del") == 0 {
				txn.DeleteRange(k, nil)
			} else {
				txn.Put(k, []byte(fmt.Sprint(hm.st.Rev()+1)), 0, false)
			}
		}
		hm.all = append(hm.all, txn.End()...)
		if rapid.IntRange(0, 20).Draw(t, "publish") == 0 {
			hm.latest = hm.st.View()
		}
	}
	hm.latest = hm.st.View()
	if rapid.IntRange(0, 4).Draw(t, "lag") > 0 {
		hm.pass()
	}
}

// compact compacts, usually after the hub has caught up with the writes, as the Compact RPC
// waits for (waitRev); otherwise the hub meets a view compacted past revisions it never saw.
func (hm *hubModel) compact(t *rapid.T) {
	if rapid.IntRange(0, 4).Draw(t, "gated") > 0 {
		hm.pass()
	}
	lo := max(hm.st.CompactRev(), 1)
	if lo >= hm.st.Rev() {
		t.Skip("nothing to compact")
	}
	if err := hm.st.Compact(rapid.Int64Range(lo+1, hm.st.Rev()).Draw(t, "rev")); err != nil {
		t.Fatal(err)
	}
	for !hm.st.CompactStep(rapid.IntRange(1, 100).Draw(t, "step")) && rapid.Bool().Draw(t, "more") {
	}
	hm.latest = hm.st.View()
	hm.pass()
}

func (hm *hubModel) create(t *rapid.T) {
	r := &pb.WatchCreateRequest{Key: []byte(rapid.SampledFrom(hubKeys).Draw(t, "key"))}
	switch rapid.IntRange(0, 2).Draw(t, "range") {
	case 1:
		r.RangeEnd = []byte("c")
		r.Key = []byte("a")
	case 2:
		r.RangeEnd = []byte{0}
	}
	r.StartRevision = rapid.Int64Range(0, hm.st.Rev()+3).Draw(t, "start")
	if rapid.Bool().Draw(t, "noput") {
		r.Filters = append(r.Filters, pb.WatchCreateRequest_NOPUT)
	}
	if rapid.IntRange(0, 3).Draw(t, "nodelete") == 0 {
		r.Filters = append(r.Filters, pb.WatchCreateRequest_NODELETE)
	}
	hm.h.Publish(hm.latest) // as the server's create does
	hm.h.Create(hm.s, r)
	id := hm.s.nextID - 1
	w := hm.s.watchers[id]
	from := r.StartRevision
	if from == 0 {
		from = w.minRev
	}
	hm.clients[id] = &hubClient{id: id, key: w.key, end: w.end, from: from, noPut: w.noPut, noDelete: w.noDelete}
}

func (hm *hubModel) cancel(t *rapid.T) {
	if len(hm.clients) == 0 {
		t.Skip("no watchers")
	}
	id := rapid.Int64Range(0, hm.s.nextID-1).Draw(t, "id")
	if hm.h.Cancel(hm.s, id) {
		hm.clients[id].canceled = true
	}
}

// consume takes up to n responses off the stream, as the send loop does, and checks each.
func (hm *hubModel) consume(t *rapid.T, n int) {
	for _, r := range hm.h.Take(hm.s, n) {
		hm.take(t, r)
	}
	hm.pass()
}

func (hm *hubModel) take(t *rapid.T, q Response) {
	r := q.Resp
	hm.h.Sent(q)
	if r.WatchId == -1 {
		if r.Created {
			return // a refused create
		}
		// A progress response: every watcher created before it got everything at or below
		// its revision.
		for _, c := range hm.clients {
			if c.created && !c.canceled && c.compacted == 0 {
				hm.check(t, c, r.Header.Revision)
			}
		}
		return
	}
	c := hm.clients[r.WatchId]
	switch {
	case r.Created:
		if c.created {
			t.Fatalf("watch %d created twice", c.id)
		}
		c.created = true
		return
	case !c.created:
		t.Fatalf("watch %d: response before created: %v", c.id, r)
	case r.CompactRevision != 0:
		next := c.from
		if len(c.got) > 0 {
			next = c.got[len(c.got)-1].Kv.ModRevision + 1
		}
		if next >= r.CompactRevision {
			t.Fatalf("watch %d canceled by compaction %d, but its next revision %d is retained", c.id, r.CompactRevision, next)
		}
		c.compacted = r.CompactRevision
		return
	case r.Canceled:
		return
	}
	if len(r.Events) == 0 {
		t.Fatalf("watch %d: empty event response %v", c.id, r)
	}
	// A shared list is exactly the response's events, and counts it among its holders.
	if q.Shared != nil && (len(q.Shared.List) != len(r.Events) || &q.Shared.List[0] != &r.Events[0] || q.Shared.Refs < 1) {
		t.Fatalf("watch %d: shared events %v (refs %d) are not the response's %v", c.id, q.Shared.List, q.Shared.Refs, r.Events)
	}
	last := r.Events[len(r.Events)-1].Kv.ModRevision
	if r.Header.Revision < last {
		t.Fatalf("watch %d: header revision %d below its last event's %d", c.id, r.Header.Revision, last)
	}
	// Whole revisions: the model's events of the response's last revision all arrive in it.
	for _, ev := range hm.all {
		if ev.Kv.ModRevision == last && c.wants(ev) && !containsEvent(r.Events, ev) {
			t.Fatalf("watch %d: revision %d split across responses", c.id, last)
		}
	}
	c.got = append(c.got, r.Events...)
}

func containsEvent(evs []*mvccpb.Event, ev *mvccpb.Event) bool {
	for _, e := range evs {
		if e.Kv.ModRevision == ev.Kv.ModRevision && bytes.Equal(e.Kv.Key, ev.Kv.Key) && e.Type == ev.Type {
			return true
		}
	}
	return false
}

// check compares what c got with the model's events up to rev (or, for a compacted watcher,
// with a prefix of them).
func (hm *hubModel) check(t *rapid.T, c *hubClient, rev int64) {
	var want []*mvccpb.Event
	for _, ev := range hm.all {
		if ev.Kv.ModRevision <= rev && c.wants(ev) {
			want = append(want, ev)
		}
	}
	got := c.got
	if c.compacted != 0 || c.canceled {
		want = want[:min(len(want), len(got))]
	}
	if len(got) < len(want) {
		t.Fatalf("watch %d: got %d events up to %d, want %d", c.id, len(got), rev, len(want))
	}
	got = got[:len(want)]
	for i := range want {
		if got[i].Type != want[i].Type || !bytes.Equal(got[i].Kv.Key, want[i].Kv.Key) ||
			got[i].Kv.ModRevision != want[i].Kv.ModRevision || !bytes.Equal(got[i].Kv.Value, want[i].Kv.Value) {
			t.Fatalf("watch %d: event %d is %v, want %v", c.id, i, got[i], want[i])
		}
	}
}
