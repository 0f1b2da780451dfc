package server

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"
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
		p := newPreEncoded(r, evs)
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
