//go:build difftest

package difftest

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Shape of the watch sequences.
const (
	watchOpsDefault  = 150
	watchStreams     = 2                      // Watch streams open on each server
	watchIdleSettle  = 250 * time.Millisecond // a step's responses are over after this silence (etcd syncs unsynced watchers every 100 ms)
	watchStepTimeout = 10 * time.Second
)

// TestWatch runs the same seeded script of writes and watch requests (create with every kind
// of range, start revision, filter, prev_kv and explicit ID; cancel; progress request) on
// watchStreams streams of each server. After each step it waits until both servers have been
// quiet for watchIdleSettle and compares what each stream received in that step: per watch ID,
// the responses in order, as protobuf messages with the top-level header's member fields cleared.
// Order across watch IDs is not compared (etcd's own order there depends on map iteration).
func TestWatch(t *testing.T) {
	n := opsFor(watchOpsDefault)
	ref, cand := startPair(t)
	g := newGen(*seedFlag, true, false)
	refStreams, candStreams := openStreams(t, ref.conn), openStreams(t, cand.conn)
	sum := tally{}
	ids := []int64{0} // IDs ever given out, to cancel or reuse
	for i := range n {
		kind, desc, write, sreq, si := g.watchStep(ids)
		var refOut, candOut string
		var wg sync.WaitGroup
		for _, side := range []struct {
			conn    *grpc.ClientConn
			streams []*diffStream
			out     *string
		}{{ref.conn, refStreams, &refOut}, {cand.conn, candStreams, &candOut}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var b strings.Builder
				if write != nil {
					resp, err := callGRPC(side.conn, write)
					fmt.Fprintf(&b, "write: %s\n", showGRPC(maskedOrNil(resp), err))
				} else if err := side.streams[si].s.Send(sreq); err != nil {
					fmt.Fprintf(&b, "send: %v\n", err)
				}
				for k, s := range side.streams {
					fmt.Fprintf(&b, "stream %d:\n%s", k, s.settle())
				}
				*side.out = b.String()
			}()
		}
		wg.Wait()
		if err := ref.alive(); err != nil {
			t.Fatalf("the reference died on op #%d: %v", i, err)
		}
		if refOut != candOut {
			mismatch(t, sum, i, desc, refOut, candOut)
		}
		logOp(t, i, desc, refOut)
		sum.add(kind, "compared")
		if write != nil {
			resp, err := callGRPC(ref.conn, &pb.RangeRequest{Key: []byte{0}, CountOnly: true})
			g.observe(&pb.RangeRequest{}, resp, err == nil)
			if c, ok := write.(*pb.CompactionRequest); ok && strings.HasPrefix(refOut, "write: *etcdserverpb.CompactionResponse") {
				g.compacted = c.Revision
			}
		}
		for _, id := range createdIDs(refOut) {
			ids = append(ids, id)
		}
	}
	t.Log(sum.String())
}

func maskedOrNil(m proto.Message) proto.Message {
	if m == nil {
		return nil
	}
	return masked(m)
}

// watchStep draws the next step: a write (put, delete, txn, compaction) or a request on
// stream si.
func (g *gen) watchStep(ids []int64) (kind, desc string, write proto.Message, req *pb.WatchRequest, si int) {
	si = g.r.IntN(watchStreams)
	switch x := g.r.IntN(100); {
	case x < 25:
		write = g.putReq()
		kind = "put"
	case x < 32:
		write = g.deleteReq()
		kind = "delete"
	case x < 42:
		kind, write = g.txnReq()
	case x < 45:
		write = g.compactReq()
		kind = "compact"
	case x < 80:
		kind = "create"
		req = &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: g.watchCreate(ids)}}
	case x < 92:
		kind = "cancel"
		id := pick(g, ids...)
		if g.p(0.1) {
			id = 1000
		}
		req = &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: id}}}
	default:
		kind = "progress"
		req = &pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}
	}
	if write != nil {
		return "write " + kind, describe(write), write, nil, 0
	}
	return "watch " + kind, fmt.Sprintf("stream %d: %s", si, describe(req)), nil, req, si
}

func (g *gen) watchCreate(ids []int64) *pb.WatchCreateRequest {
	c := &pb.WatchCreateRequest{}
	c.Key, c.RangeEnd = g.keyRange(true)
	switch x := g.r.IntN(10); {
	case x < 3:
	case x < 6:
		c.StartRevision = g.r.Int64N(g.rev) + 1
	case x < 7:
		c.StartRevision = g.compacted // exactly the compaction revision
	case x < 8:
		c.StartRevision = g.rev + 1 + g.r.Int64N(3) // the future
	case x < 9:
		c.StartRevision = -1
	default:
		c.StartRevision = max(g.compacted-1, 1)
	}
	c.PrevKv = g.p(0.3)
	if g.p(0.2) {
		c.Filters = append(c.Filters, pb.WatchCreateRequest_NOPUT)
	}
	if g.p(0.2) {
		c.Filters = append(c.Filters, pb.WatchCreateRequest_NODELETE)
	}
	if g.p(0.2) {
		c.WatchId = pick(g, ids...) + int64(g.r.IntN(3))
	}
	c.Fragment = g.p(0.1)
	return c
}

// diffStream is one Watch stream whose responses are gathered per step.
type diffStream struct {
	s pb.Watch_WatchClient
	c chan *pb.WatchResponse
}

func openStreams(t *testing.T, conn *grpc.ClientConn) []*diffStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var out []*diffStream
	for range watchStreams {
		s, err := pb.NewWatchClient(conn).Watch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ds := &diffStream{s: s, c: make(chan *pb.WatchResponse, 1024)}
		go func() {
			defer close(ds.c)
			for {
				r, err := s.Recv()
				if err != nil {
					return
				}
				ds.c <- r
			}
		}()
		out = append(out, ds)
	}
	return out
}

// settle gathers the responses until watchIdleSettle passes without one, and prints them
// grouped by watch ID in ID order, each group in arrival order.
func (ds *diffStream) settle() string {
	groups := map[int64][]string{}
	deadline := time.After(watchStepTimeout)
	for {
		select {
		case r, ok := <-ds.c:
			if !ok {
				groups[-2] = append(groups[-2], "stream ended")
				return printGroups(groups)
			}
			groups[r.WatchId] = append(groups[r.WatchId], describe(masked(r)))
			continue
		case <-time.After(watchIdleSettle):
		case <-deadline:
		}
		return printGroups(groups)
	}
}

func printGroups(groups map[int64][]string) string {
	keys := make([]int64, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	var b strings.Builder
	for _, k := range keys {
		for _, s := range groups[k] {
			fmt.Fprintf(&b, "  %s\n", strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n  "))
		}
	}
	return b.String()
}

// createdIDs finds the watch IDs the reference gave out in a step's output.
func createdIDs(out string) []int64 {
	var ids []int64
	for _, blk := range strings.Split(out, "*etcdserverpb.WatchResponse") {
		if strings.Contains(blk, "created:") && !strings.Contains(blk, "canceled:") {
			var id int64
			if i := strings.Index(blk, "watch_id:"); i >= 0 {
				fmt.Sscanf(blk[i+len("watch_id:"):], "%d", &id)
			}
			ids = append(ids, id)
		}
	}
	return ids
}

// fragmented matches a fragment flag in prototext, whose spacing after the colon varies from
// one binary to another (protobuf's detrand).
var fragmented = regexp.MustCompile(`fragment:\s+true`)

// TestWatchFragment compares a catch-up response over --max-request-bytes + 512 KiB (2 MiB by
// default) with fragment set and not set, and a large single revision.
func TestWatchFragment(t *testing.T) {
	ref, cand := startPair(t)
	value := make([]byte, 600*1024)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	var reqs []proto.Message
	for i := range 5 {
		reqs = append(reqs, &pb.PutRequest{Key: []byte(fmt.Sprintf("f%d", i)), Value: value})
	}
	for _, r := range reqs {
		for _, m := range []*member{ref, cand} {
			if _, err := callGRPC(m.conn, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	steps := []*pb.WatchCreateRequest{
		{Key: []byte("f"), RangeEnd: []byte("g"), StartRevision: 2, Fragment: true},
		{Key: []byte("f"), RangeEnd: []byte("g"), StartRevision: 2},
		{Key: []byte("f0"), StartRevision: 2, Fragment: true, PrevKv: true},
	}
	refStreams, candStreams := openStreams(t, ref.conn), openStreams(t, cand.conn)
	for i, c := range steps {
		req := &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: c}}
		var outs [2]string
		var wg sync.WaitGroup
		for k, ss := range [][]*diffStream{refStreams, candStreams} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := ss[0].s.Send(req); err != nil {
					outs[k] = err.Error()
					return
				}
				outs[k] = ss[0].settle()
			}()
		}
		wg.Wait()
		if outs[0] != outs[1] {
			mismatch(t, tally{}, i, describe(req), outs[0], outs[1])
		}
		if i == 0 && !fragmented.MatchString(outs[0]) {
			t.Fatalf("the reference did not fragment:\n%s", outs[0])
		}
		logOp(t, i, describe(req), outs[0])
	}
}
