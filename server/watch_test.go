package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// watchConfig is testConfig with extra flags.
func watchConfig(t *testing.T, extra ...string) *Config {
	t.Helper()
	args := append([]string{
		"--name", "m1",
		"--data-dir", t.TempDir(),
		"--listen-client-urls", "http://127.0.0.1:0",
		"--advertise-client-urls", "http://127.0.0.1:2379",
		"--initial-cluster", "m1=http://127.0.0.1:2380",
		"--initial-advertise-peer-urls", "http://127.0.0.1:2380", "--listen-peer-urls", "http://127.0.0.1:0",
		"--heartbeat-interval", "10", "--election-timeout", "100",
	}, extra...)
	cfg, err := ParseFlags(args, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// rawWatch is one raw gRPC Watch stream whose responses arrive on c.
type rawWatch struct {
	t      *testing.T
	s      pb.Watch_WatchClient
	c      chan *pb.WatchResponse
	cancel context.CancelFunc
}

func grpcConn(t testing.TB, m *Member) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(strings.TrimPrefix(m.ClientURL(), "http://"),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<31-1)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// openWatch opens a stream; if read is false nothing receives until start is called, so the
// server's sends back up (a slow consumer).
func openWatch(t *testing.T, conn *grpc.ClientConn, read bool) *rawWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := &rawWatch{t: t, s: s, c: make(chan *pb.WatchResponse, 1<<16), cancel: cancel}
	t.Cleanup(cancel)
	if read {
		w.start()
	}
	return w
}

func (w *rawWatch) start() {
	go func() {
		defer close(w.c)
		for {
			r, err := w.s.Recv()
			if err != nil {
				return
			}
			w.c <- r
		}
	}()
}

func (w *rawWatch) send(r *pb.WatchRequest) {
	w.t.Helper()
	if err := w.s.Send(r); err != nil {
		w.t.Fatal(err)
	}
}

func (w *rawWatch) create(r *pb.WatchCreateRequest) {
	w.t.Helper()
	w.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: r}})
}

func (w *rawWatch) cancelID(id int64) {
	w.t.Helper()
	w.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: id}}})
}

func (w *rawWatch) progress() {
	w.t.Helper()
	w.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}})
}

// next returns the next response, as fmtWatch prints it.
func (w *rawWatch) next() string {
	w.t.Helper()
	select {
	case r, ok := <-w.c:
		if !ok {
			w.t.Fatal("watch stream ended")
		}
		return fmtWatch(w.t, r)
	case <-time.After(10 * time.Second):
		w.t.Fatal("no watch response within 10s")
	}
	return ""
}

func (w *rawWatch) expect(want ...string) {
	w.t.Helper()
	for _, s := range want {
		if got := w.next(); got != s {
			w.t.Fatalf("watch response\n got: %.300s\nwant: %s", got, s)
		}
	}
}

// quiet checks that no response arrives for a while.
func (w *rawWatch) quiet() {
	w.t.Helper()
	select {
	case r := <-w.c:
		w.t.Fatalf("unexpected watch response %s", fmtWatch(w.t, r))
	case <-time.After(300 * time.Millisecond):
	}
}

// fmtWatch prints a response compactly; the header's member fields must be set (etcd sets them
// on every watch response) and are left out.
func fmtWatch(t *testing.T, r *pb.WatchResponse) string {
	t.Helper()
	h := r.GetHeader()
	if h.GetClusterId() == 0 || h.GetMemberId() == 0 || h.GetRaftTerm() == 0 {
		t.Fatalf("watch response header lacks member fields: %v", r)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "id=%d rev=%d", r.WatchId, h.GetRevision())
	for _, f := range []struct {
		on   bool
		name string
	}{{r.Created, "created"}, {r.Canceled, "canceled"}, {r.Fragment, "fragment"}} {
		if f.on {
			b.WriteString(" " + f.name)
		}
	}
	if r.CompactRevision != 0 {
		fmt.Fprintf(&b, " compact=%d", r.CompactRevision)
	}
	if r.CancelReason != "" {
		fmt.Fprintf(&b, " reason=%q", r.CancelReason)
	}
	for _, ev := range r.Events {
		b.WriteString(" | " + fmtEvent(ev))
	}
	return b.String()
}

func fmtEvent(ev *mvccpb.Event) string {
	s := fmt.Sprintf("%s %s@%d", ev.Type, ev.Kv.Key, ev.Kv.ModRevision)
	if ev.Type == mvccpb.Event_PUT {
		s += "=" + string(ev.Kv.Value)
	}
	if ev.PrevKv != nil {
		s += fmt.Sprintf(" prev=%s@%d", ev.PrevKv.Value, ev.PrevKv.ModRevision)
	}
	return s
}

func put(t *testing.T, cli *clientv3.Client, k, v string) int64 {
	t.Helper()
	r, err := cli.Put(context.Background(), k, v)
	if err != nil {
		t.Fatal(err)
	}
	return r.Header.Revision
}

// The create, cancel and progress protocol, with the exact shapes etcd v3.7.3 answers.
func TestWatchProtocol(t *testing.T) {
	m := startMember(t, watchConfig(t))
	t.Cleanup(m.Stop) // after the streams' and clients' cleanups: a graceful stop waits for open streams
	cli := newClient(t, m)
	w := openWatch(t, grpcConn(t, m), true)

	w.progress() // no watchers: no answer
	w.quiet()
	w.create(&pb.WatchCreateRequest{Key: []byte("a")})
	w.create(&pb.WatchCreateRequest{Key: []byte("a"), WatchId: 2})
	w.create(&pb.WatchCreateRequest{Key: []byte("b")}) // auto IDs skip the taken 2, and never go back
	w.create(&pb.WatchCreateRequest{Key: []byte("a"), WatchId: 2})
	w.create(&pb.WatchCreateRequest{Key: []byte("b"), RangeEnd: []byte("a")})
	w.create(&pb.WatchCreateRequest{Key: []byte("b"), StartRevision: -1})
	w.expect(
		"id=0 rev=1 created",
		"id=2 rev=1 created",
		"id=1 rev=1 created",
		`id=-1 rev=1 created canceled reason="mvcc: duplicate watch ID provided on the WatchStream"`,
		`id=-1 rev=1 created canceled reason="mvcc: watcher range is empty"`,
		`id=-1 rev=1 created canceled reason="etcdserver: mvcc: required revision has been compacted"`,
	)
	w.create(&pb.WatchCreateRequest{Key: []byte("c")})
	w.expect("id=3 rev=1 created")

	put(t, cli, "a", "1")
	put(t, cli, "b", "1")
	got := []string{w.next(), w.next(), w.next()}
	want := map[string]bool{"id=0 rev=2 | PUT a@2=1": true, "id=2 rev=2 | PUT a@2=1": true, "id=1 rev=3 | PUT b@3=1": true}
	for _, g := range got {
		if !want[g] {
			t.Fatalf("event responses %q, want %v", got, want)
		}
		delete(want, g)
	}
	w.progress()
	w.expect("id=-1 rev=3")
	w.cancelID(2)
	w.expect("id=2 rev=3 canceled")
	w.cancelID(2) // unknown now: no answer
	w.cancelID(77)
	w.quiet()
	put(t, cli, "a", "2")
	w.expect("id=0 rev=4 | PUT a@4=2")

	// A future start revision waits, and holds progress back until it is reached.
	w.create(&pb.WatchCreateRequest{Key: []byte("a"), StartRevision: 6})
	w.expect("id=4 rev=4 created")
	w.progress()
	w.quiet()
	put(t, cli, "a", "3")
	w.expect("id=0 rev=5 | PUT a@5=3")
	put(t, cli, "a", "4")
	got = []string{w.next(), w.next()}
	if !(got[0] == "id=0 rev=6 | PUT a@6=4" && got[1] == "id=4 rev=6 | PUT a@6=4" ||
		got[1] == "id=0 rev=6 | PUT a@6=4" && got[0] == "id=4 rev=6 | PUT a@6=4") {
		t.Fatalf("got %q", got)
	}
	w.progress()
	w.expect("id=-1 rev=6")
}

// History replay, filters, prev_kv, whole revisions, and a start exactly at the compaction
// revision (etcd #18089: put, put, del@5, put@6, compact 5, watch from 5 sees the delete).
func TestWatchReplayAndCompaction(t *testing.T) {
	m := startMember(t, watchConfig(t))
	t.Cleanup(m.Stop) // after the streams' and clients' cleanups: a graceful stop waits for open streams
	cli := newClient(t, m)
	ctx := context.Background()
	put(t, cli, "a", "1")                           // 2
	put(t, cli, "b", "1")                           // 3
	put(t, cli, "a", "2")                           // 4
	if _, err := cli.Delete(ctx, "a"); err != nil { // 5
		t.Fatal(err)
	}
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut("b", "2"), clientv3.OpPut("c", "1")).Commit(); err != nil { // 6
		t.Fatal(err)
	}
	w := openWatch(t, grpcConn(t, m), true)
	w.create(&pb.WatchCreateRequest{Key: []byte("a"), RangeEnd: []byte("z"), StartRevision: 2, PrevKv: true})
	w.expect("id=0 rev=6 created",
		"id=0 rev=6 | PUT a@2=1 | PUT b@3=1 | PUT a@4=2 prev=1@2 | DELETE a@5 prev=2@4 | PUT b@6=2 prev=1@3 | PUT c@6=1")
	w.create(&pb.WatchCreateRequest{Key: []byte("a"), RangeEnd: []byte("z"), StartRevision: 3,
		Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}})
	w.expect("id=1 rev=6 created", "id=1 rev=6 | DELETE a@5")
	w.create(&pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: 5,
		Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NODELETE}})
	w.expect("id=2 rev=6 created", "id=2 rev=6 | PUT b@6=2 | PUT c@6=1")

	if _, err := cli.Compact(ctx, 5); err != nil {
		t.Fatal(err)
	}
	w.create(&pb.WatchCreateRequest{Key: []byte("a"), RangeEnd: []byte("z"), StartRevision: 5, PrevKv: true})
	w.expect("id=3 rev=6 created", "id=3 rev=6 | DELETE a@5 | PUT b@6=2 prev=1@3 | PUT c@6=1")
	w.create(&pb.WatchCreateRequest{Key: []byte("a"), RangeEnd: []byte("z"), StartRevision: 4})
	w.expect("id=4 rev=6 created", "id=4 rev=0 canceled compact=5")
	// A compacted watcher keeps its ID until canceled, and holds progress back meanwhile.
	w.progress()
	w.quiet()
	w.cancelID(4)
	w.expect("id=4 rev=6 canceled")
	w.progress()
	w.expect("id=-1 rev=6")

	// clientv3 sees the same through its API.
	wc := cli.Watch(ctx, "a", clientv3.WithRev(2))
	r := <-wc
	if r.Err() != rpctypes.ErrCompacted || r.CompactRevision != 5 {
		t.Fatalf("clientv3 watch below compaction: err %v compact %d", r.Err(), r.CompactRevision)
	}
}

// A slow consumer falls behind into the unsynced set and catches up from the history: every
// revision exactly once, in order, whole; the writes and the other watchers of the member,
// which share the events of each revision with it, keep flowing meanwhile. The slow stream
// has two watchers of the same range, which fall behind and catch up together.
func TestWatchSlowConsumer(t *testing.T) {
	m := startMember(t, watchConfig(t))
	t.Cleanup(m.Stop) // after the streams' and clients' cleanups: a graceful stop waits for open streams
	cli := newClient(t, m)
	conn := grpcConn(t, m)
	slow := openWatch(t, conn, false)
	fast := openWatch(t, conn, true)
	for _, w := range []*rawWatch{slow, fast} {
		for range 2 {
			w.create(&pb.WatchCreateRequest{Key: []byte("k"), RangeEnd: []byte("l")})
		}
	}
	fast.expect("id=0 rev=1 created", "id=1 rev=1 created")
	fastCli := cli.Watch(context.Background(), "k", clientv3.WithPrefix())
	const n = 3000
	value := strings.Repeat("v", 2000)
	for i := range n {
		if _, err := cli.Txn(context.Background()).Then(
			clientv3.OpPut(fmt.Sprintf("k%d", i%7), value), clientv3.OpPut(fmt.Sprintf("k%d", i%7+7), value)).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	// Each revision r in [2, n+1] holds two events; next[id] is the revision a watcher's next
	// event must have, and the second event of a revision follows the first in one response.
	check := func(next map[int64]int64, id int64, evs []*mvccpb.Event, header int64) {
		t.Helper()
		if len(evs)%2 != 0 {
			t.Fatalf("watch %d: a revision split across responses: %d events", id, len(evs))
		}
		for i, ev := range evs {
			if ev.Kv.ModRevision != next[id] {
				t.Fatalf("watch %d: event %d: revision %d, want %d", id, i, ev.Kv.ModRevision, next[id])
			}
			if i%2 == 1 {
				next[id]++
			}
		}
		if header < next[id]-1 {
			t.Fatalf("watch %d: header revision %d below its events' %d", id, header, next[id]-1)
		}
	}
	next := map[int64]int64{0: 2, 1: 2, -1: 2}
	for next[-1] <= n+1 {
		r := <-fastCli
		if r.Err() != nil {
			t.Fatal(r.Err())
		}
		check(next, -1, r.Events, r.Header.Revision)
	}
	for next[0] <= n+1 || next[1] <= n+1 {
		r := <-fast.c
		if r == nil {
			t.Fatal("fast stream ended")
		}
		check(next, r.WatchId, r.Events, r.Header.Revision)
	}
	m.watch.mu.Lock()
	behind := m.watch.core.Behind()
	m.watch.mu.Unlock()
	if len(behind) != 2 {
		t.Fatalf("watchers behind %v, want the slow stream's two", behind)
	}
	slow.start()
	slow.expect("id=0 rev=1 created", "id=1 rev=1 created")
	next = map[int64]int64{0: 2, 1: 2}
	for next[0] <= n+1 || next[1] <= n+1 {
		r := <-slow.c
		if r == nil {
			t.Fatal("slow stream ended")
		}
		check(next, r.WatchId, r.Events, r.Header.Revision)
	}
	slow.progress()
	slow.expect(fmt.Sprintf("id=-1 rev=%d", n+1))
}

// Compaction past a slow watcher's next revision cancels it with the compaction revision.
func TestWatchSlowConsumerCompacted(t *testing.T) {
	m := startMember(t, watchConfig(t))
	t.Cleanup(m.Stop) // after the streams' and clients' cleanups: a graceful stop waits for open streams
	cli := newClient(t, m)
	slow := openWatch(t, grpcConn(t, m), false)
	slow.create(&pb.WatchCreateRequest{Key: []byte("k")})
	value := strings.Repeat("v", 4000)
	var last int64
	for range 2000 {
		last = put(t, cli, "k", value)
	}
	if _, err := cli.Compact(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	slow.start()
	if got := slow.next(); got != "id=0 rev=1 created" {
		t.Fatalf("first response %s", got)
	}
	want := fmt.Sprintf("id=0 rev=0 canceled compact=%d", last)
	for {
		got := slow.next()
		if got == want {
			break
		}
		if !strings.Contains(got, "| PUT k@") {
			t.Fatalf("got %s, want events then %s", got, want)
		}
	}
}

// progress_notify watchers get a notification each interval in which they got no events.
func TestWatchProgressNotify(t *testing.T) {
	m := startMember(t, watchConfig(t, "--watch-progress-notify-interval", "200ms"))
	t.Cleanup(m.Stop) // after the streams' and clients' cleanups: a graceful stop waits for open streams
	cli := newClient(t, m)
	put(t, cli, "x", "1")
	w := openWatch(t, grpcConn(t, m), true)
	w.create(&pb.WatchCreateRequest{Key: []byte("a"), ProgressNotify: true})
	w.create(&pb.WatchCreateRequest{Key: []byte("b")})
	w.expect("id=0 rev=2 created", "id=1 rev=2 created", "id=0 rev=2", "id=0 rev=2")
	wc := cli.Watch(context.Background(), "a", clientv3.WithProgressNotify())
	r := <-wc
	if !r.IsProgressNotify() || r.Header.Revision != 2 {
		t.Fatalf("clientv3 got %+v, want a progress notification at 2", r)
	}
}

// With fragment set, a response of at least --max-request-bytes + 512 KiB is split.
func TestWatchFragment(t *testing.T) {
	m := startMember(t, watchConfig(t, "--max-request-bytes", "1048576"))
	t.Cleanup(m.Stop) // after the streams' and clients' cleanups: a graceful stop waits for open streams
	cli := newClient(t, m)
	value := strings.Repeat("v", 500*1024)
	for i := range 4 {
		put(t, cli, fmt.Sprintf("f%d", i), value)
	}
	w := openWatch(t, grpcConn(t, m), true)
	w.create(&pb.WatchCreateRequest{Key: []byte("f"), RangeEnd: []byte("g"), StartRevision: 2, Fragment: true})
	w.create(&pb.WatchCreateRequest{Key: []byte("f"), RangeEnd: []byte("g"), StartRevision: 2})
	short := func(s string) string { return strings.ReplaceAll(s, "="+value, "") }
	// Three 500 KiB events fit under 1.5 MiB, the fourth does not. The two watchers' responses
	// may interleave; each one's come in order.
	got := map[string][]string{}
	for range 5 {
		r := short(w.next())
		id, _, _ := strings.Cut(r, " ")
		got[id] = append(got[id], r)
	}
	want := map[string][]string{
		"id=0": {"id=0 rev=5 created", "id=0 rev=5 fragment | PUT f0@2 | PUT f1@3 | PUT f2@4", "id=0 rev=5 | PUT f3@5"},
		"id=1": {"id=1 rev=5 created", "id=1 rev=5 | PUT f0@2 | PUT f1@3 | PUT f2@4 | PUT f3@5"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// The gateway streams watch responses as etcd's does: one JSON object {"result": ...} per
// response.
func TestWatchGateway(t *testing.T) {
	m := startMember(t, watchConfig(t))
	t.Cleanup(m.Stop) // after the streams' and clients' cleanups: a graceful stop waits for open streams
	cli := newClient(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", m.ClientURL()+"/v3/watch",
		strings.NewReader(`{"create_request":{"key":"YQ=="}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 4096)
	n, err := resp.Body.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), `"created":true`) {
		t.Fatalf("created: %q, %v", buf[:n], err)
	}
	put(t, cli, "a", "1")
	n, err = resp.Body.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), `"events":[{"kv":{"key":"YQ==","create_revision":"2","mod_revision":"2","version":"1","value":"MQ=="}}]`) {
		t.Fatalf("event: %q, %v", buf[:n], err)
	}
}
