package server

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	"github.com/basaltdb/basalt/engine/mvcc"
	"github.com/basaltdb/basalt/engine/watch"
)

// A pre-encoded watch response is byte for byte what proto.Marshal gives for the same
// response, whatever its fields (zero, negative, a present but empty header, prev_kv, a
// fragment), and watchCodec passes every other message to the proto codec unchanged.
func TestWatchEncoding(t *testing.T) {
	codec := newWatchCodec()
	rapid.Check(t, func(t *rapid.T) {
		r := drawWatchResponse(t)
		want, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := appendWatchEvents(nil, r.Events)
		if err != nil {
			t.Fatal(err)
		}
		// The events, in random parts encoded apart (as a merged run's are), make the same bytes.
		var parts [][]byte
		for rest := r.Events; len(rest) > 0; {
			n := rapid.IntRange(1, len(rest)).Draw(t, "part")
			part, err := appendWatchEvents(nil, rest[:n])
			if err != nil {
				t.Fatal(err)
			}
			parts, rest = append(parts, part), rest[n:]
		}
		if !bytes.Equal(bytes.Join(parts, nil), evs) {
			t.Fatalf("events encoded in parts differ")
		}
		p := newPreEncoded(r, parts...)
		bs, err := codec.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := bs.Materialize(); !bytes.Equal(got, want) || p.Len() != len(want) {
			t.Fatalf("pre-encoded (length %d)\n%x\nproto.Marshal\n%x\nof %v", p.Len(), got, want, r)
		}
		bs, err = codec.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := bs.Materialize(); !bytes.Equal(got, want) {
			t.Fatalf("codec on a message\n%x\nproto.Marshal\n%x", got, want)
		}
		var back pb.WatchResponse
		if err := codec.Unmarshal(bs, &back); err != nil || !proto.Equal(&back, r) {
			t.Fatalf("round trip: %v, %v", &back, err)
		}
	})
}

// int64s draws values with the edges (0, ±1, the extremes) often.
func drawInt64(t *rapid.T, label string) int64 {
	return rapid.OneOf(rapid.SampledFrom([]int64{0, 1, -1, 1<<63 - 1, -1 << 63, 127, 128}), rapid.Int64()).Draw(t, label)
}

func drawUint64(t *rapid.T, label string) uint64 {
	return rapid.OneOf(rapid.SampledFrom([]uint64{0, 1, 1<<64 - 1, 127, 128}), rapid.Uint64()).Draw(t, label)
}

func drawKV(t *rapid.T, label string) *mvccpb.KeyValue {
	if rapid.IntRange(0, 4).Draw(t, label+"-nil") == 0 {
		return nil
	}
	return &mvccpb.KeyValue{
		Key:            rapid.SliceOfN(rapid.Byte(), 0, 40).Draw(t, label+"-key"),
		CreateRevision: drawInt64(t, label+"-create"),
		ModRevision:    drawInt64(t, label+"-mod"),
		Version:        drawInt64(t, label+"-version"),
		Value:          rapid.SliceOfN(rapid.Byte(), 0, 300).Draw(t, label+"-value"),
		Lease:          drawInt64(t, label+"-lease"),
	}
}

func drawWatchResponse(t *rapid.T) *pb.WatchResponse {
	r := &pb.WatchResponse{
		WatchId:         drawInt64(t, "watch-id"),
		Created:         rapid.Bool().Draw(t, "created"),
		Canceled:        rapid.Bool().Draw(t, "canceled"),
		CompactRevision: drawInt64(t, "compact"),
		CancelReason:    rapid.OneOf(rapid.Just(""), rapid.String()).Draw(t, "reason"),
		Fragment:        rapid.Bool().Draw(t, "fragment"),
	}
	if rapid.IntRange(0, 3).Draw(t, "header") > 0 {
		r.Header = &pb.ResponseHeader{ClusterId: drawUint64(t, "cluster"), MemberId: drawUint64(t, "member"),
			Revision: drawInt64(t, "revision"), RaftTerm: drawUint64(t, "term")}
	}
	for i := range rapid.IntRange(0, 5).Draw(t, "events") {
		ev := &mvccpb.Event{
			Type:   mvccpb.Event_EventType(rapid.IntRange(0, 1).Draw(t, fmt.Sprint("type", i))),
			Kv:     drawKV(t, fmt.Sprint("kv", i)),
			PrevKv: drawKV(t, fmt.Sprint("prev", i)),
		}
		r.Events = append(r.Events, ev)
	}
	return r
}

// Shared events too large for one response are fragmented for the watchers that asked, as any
// other response: here a delete of keys worth more than --max-request-bytes + 512 KiB, watched
// by two fragmenting watchers (who share the encoded events) and one that is not.
func TestWatchFragmentShared(t *testing.T) {
	m := startMember(t, watchConfig(t, "--max-request-bytes", "2048", "--unsafe-no-fsync"))
	t.Cleanup(m.Stop) // after the streams' and clients' cleanups: a graceful stop waits for open streams
	cli := newClient(t, m)
	const keys = 300
	for i := range keys {
		put(t, cli, fmt.Sprintf("f%03d%s", i, strings.Repeat("k", 1900)), "v")
	}
	w := openWatch(t, grpcConn(t, m), true)
	for _, fragment := range []bool{true, true, false} {
		w.create(&pb.WatchCreateRequest{Key: []byte("f"), RangeEnd: []byte("g"), Fragment: fragment})
	}
	rev := int64(keys + 1)
	w.expect(fmt.Sprintf("id=0 rev=%d created", rev), fmt.Sprintf("id=1 rev=%d created", rev), fmt.Sprintf("id=2 rev=%d created", rev))
	if _, err := cli.Delete(context.Background(), "f", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	got := map[int64][]*pb.WatchResponse{}
	for n := 0; n < 3*keys; {
		r := <-w.c
		if r == nil {
			t.Fatal("stream ended")
		}
		got[r.WatchId] = append(got[r.WatchId], r)
		n += len(r.Events)
	}
	for id, rs := range got {
		parts := []string{}
		next := 0
		for i, r := range rs {
			if r.Fragment != (i < len(rs)-1) || r.Header.Revision != rev+1 {
				t.Fatalf("watch %d part %d: fragment %v, header revision %d", id, i, r.Fragment, r.Header.Revision)
			}
			for _, ev := range r.Events {
				if ev.Type != mvccpb.Event_DELETE || !strings.HasPrefix(string(ev.Kv.Key), fmt.Sprintf("f%03d", next)) {
					t.Fatalf("watch %d: event %d is %s", id, next, fmtEvent(ev))
				}
				next++
			}
			parts = append(parts, fmt.Sprint(len(r.Events)))
		}
		// A delete event takes 1918 bytes in a response (a 1904-byte key): 274 of them and the
		// header stay under 2048 + 512 KiB = 526336 bytes.
		want := map[int64]string{0: "[274 26]", 1: "[274 26]", 2: "[300]"}[id]
		if fmt.Sprint(parts) != want {
			t.Fatalf("watch %d: parts of %v events, want %s", id, parts, want)
		}
	}
}

// mergeLagging sends every taken response exactly once, each watcher's events in their order,
// merges only runs of at least watchMergeRunMin event responses of one watcher, and never moves
// an event across a control response (created, canceled, a stream-wide progress promise).
func TestWatchMergeLagging(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		st := mvcc.New()
		h := watch.New(nil, st.View())
		s := h.NewStream()
		keys := []string{"a", "b", "c"}
		for range rapid.IntRange(1, 200).Draw(t, "steps") {
			switch rapid.IntRange(0, 9).Draw(t, "op") {
			case 0:
				h.Create(s, &pb.WatchCreateRequest{Key: []byte(rapid.SampledFrom(keys).Draw(t, "key")),
					ProgressNotify: rapid.Bool().Draw(t, "progress-notify")})
			case 1:
				h.Cancel(s, rapid.Int64Range(0, 5).Draw(t, "cancel"))
			case 2:
				h.Progress(s)
			case 3:
				h.ProgressTick(s)
			default:
				txn := st.Begin()
				txn.Put([]byte(rapid.SampledFrom(keys).Draw(t, "put")), []byte("v"), 0, false)
				txn.End()
				h.Publish(st.View())
			}
		}
		qs := h.Take(s, s.Queued())
		groups := mergeLagging(qs)
		// Flattened, the groups hold every response once; where each group starts, every
		// control response before it in the queue has been sent, and none after it.
		var flat []watch.Response
		sent := map[*pb.WatchResponse]bool{}
		for _, g := range groups {
			first := slices.IndexFunc(qs, func(q watch.Response) bool { return q.Resp == g[0].Resp })
			last := slices.IndexFunc(qs, func(q watch.Response) bool { return q.Resp == g[len(g)-1].Resp })
			for i, q := range qs {
				if q.Control() && ((i < first) != sent[q.Resp] || first < i && i < last) {
					t.Fatalf("group at [%d, %d] sent with control response %d sent=%v", first, last, i, sent[q.Resp])
				}
			}
			if len(g) > 1 && len(g) < watchMergeRunMin {
				t.Fatalf("merged a run of %d", len(g))
			}
			for _, q := range g {
				if len(g) > 1 && (q.Control() || len(q.Resp.Events) == 0 || q.Resp.WatchId != g[0].Resp.WatchId) {
					t.Fatalf("merged %v with %v", q.Resp, g[0].Resp)
				}
				sent[q.Resp] = true
			}
			flat = append(flat, g...)
		}
		if len(flat) != len(qs) || len(sent) != len(qs) {
			t.Fatalf("%d responses sent (%d distinct), %d taken", len(flat), len(sent), len(qs))
		}
		perID := func(rs []watch.Response) map[int64][]*pb.WatchResponse {
			out := map[int64][]*pb.WatchResponse{}
			for _, q := range rs {
				out[q.Resp.WatchId] = append(out[q.Resp.WatchId], q.Resp)
			}
			return out
		}
		want, got := perID(qs), perID(flat)
		for id := range want {
			if !slices.Equal(want[id], got[id]) {
				t.Fatalf("watch %d: responses reordered", id)
			}
		}
	})
}
