package server

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/engine/mvcc"
	"github.com/basaltdb/basalt/engine/watch"
)

// Limits of watch (the hub's own are in engine/watch).
const (
	// watchSyncInterval is how often the hub's goroutine retries unsynced watchers when nothing
	// else wakes it (etcd's syncWatchers period).
	watchSyncInterval = 100 * time.Millisecond
	// watchCtrlQueuedMax bounds the control responses (created, canceled, progress) waiting in
	// one stream's send queue; the stream stops reading requests beyond it.
	watchCtrlQueuedMax = 16
	// watchSendsYieldEvery is how many responses a stream sends before it lets other goroutines
	// run: a sender with thousands of responses queued never blocks, and the goroutines of the
	// writes (request handlers, the loop), woken meanwhile, would wait for its time slice.
	watchSendsYieldEvery = 8
	// watchMergeRunMin is how many event responses of one watcher a stream's sender must find
	// queued, in a row, before it sends them as one (mergeLagging): a watcher that far behind
	// is caught up in fewer, larger responses, as one that fell into the unsynced set is.
	watchMergeRunMin = 8
	// watchFanoutShare is the share of the member's cores (GOMAXPROCS) the watch fan-out may
	// keep busy, and watchFanoutCoresMin the least it gets (fanoutPacer). With 1k watchers on
	// the key being written, on two cores, the unpaced fan-out kept up with the writes by
	// taking the cores from them: about 0.8k puts/s where 5k-6k ran with no watcher. Held to a
	// quarter of the cores it falls behind instead, and the writes kept 80-100% of the speed
	// they had with no watcher (BenchmarkWatchFanout).
	watchFanoutShare    = 0.25
	watchFanoutCoresMin = 0.25
	// watchFanoutBurst is how far ahead of its share the fan-out may run before it rests.
	watchFanoutBurst = 5 * time.Millisecond
	// watchSendChargedMax is the most one send counts as fan-out work: a send that waits
	// longer waits for its client's flow control, and a slow consumer must not make the
	// others rest.
	watchSendChargedMax = time.Millisecond
	// watchProgressIntervalMin is etcd's minWatchProgressInterval.
	watchProgressIntervalMin = 100 * time.Millisecond
	// watchProgressIntervalDefault is --watch-progress-notify-interval's default.
	watchProgressIntervalDefault = 10 * time.Minute
)

// watchHub runs the member's watch.Hub: the loop only stores the newest view and wakes the
// hub's goroutine (publish never blocks), which hands the view to the core and brings unsynced
// watchers forward; the streams' goroutines call the core for their requests and sends. Every
// call into the core is made under mu.
type watchHub struct {
	lg *zap.Logger
	// latest is the newest view the loop published.
	latest atomic.Pointer[mvcc.View]
	wake   chan struct{}
	stopc  chan struct{}
	donec  chan struct{}

	mu   sync.Mutex
	core *watch.Hub
	// streams maps the core's streams to their gRPC streams, to wake their senders.
	streams map[*watch.Stream]*watchStream
	// advanced is closed, and replaced, each time the core's revision moves.
	advanced chan struct{}
	pacer    *fanoutPacer
}

func newWatchHub(lg *zap.Logger, v *mvcc.View) *watchHub {
	h := &watchHub{
		lg:       lg,
		wake:     make(chan struct{}, 1),
		stopc:    make(chan struct{}),
		donec:    make(chan struct{}),
		core:     watch.New(lg, v),
		streams:  map[*watch.Stream]*watchStream{},
		advanced: make(chan struct{}),
		pacer:    newFanoutPacer(),
	}
	h.latest.Store(v)
	return h
}

// publish hands the hub a newer view; it never blocks.
func (h *watchHub) publish(v *mvcc.View) {
	h.latest.Store(v)
	h.kick()
}

func (h *watchHub) kick() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *watchHub) run() {
	defer close(h.donec)
	t := time.NewTicker(watchSyncInterval)
	defer t.Stop()
	// rested wakes the loop when the fan-out's rest is over.
	rested := time.NewTimer(0)
	defer rested.Stop()
	for {
		select {
		case <-h.wake:
		case <-t.C:
		case <-rested.C:
		case <-h.stopc:
			return
		}
		h.mu.Lock()
		start := time.Now()
		if d := h.pacer.delay(start); d > 0 {
			rested.Reset(d)
		} else {
			h.advance()
			if h.core.Unsynced() > 0 && h.core.Sync() {
				h.kick() // a watcher with room in its queue is still behind: go on soon
			}
			now := time.Now()
			h.pacer.charge(now, now.Sub(start))
		}
		h.wakeStreams()
		h.mu.Unlock()
	}
}

func (h *watchHub) stop() {
	close(h.stopc)
	<-h.donec
}

// advance hands the core the latest view. Called with mu.
func (h *watchHub) advance() {
	rev := h.core.Rev()
	h.core.Publish(h.latest.Load())
	if h.core.Rev() != rev {
		close(h.advanced)
		h.advanced = make(chan struct{})
	}
}

// wakeStreams wakes the senders of the streams the core queued responses on. Called with mu.
func (h *watchHub) wakeStreams() {
	for _, cs := range h.core.Woken() {
		if s := h.streams[cs]; s != nil {
			s.kick()
		}
	}
}

// waitRev returns once the watchers have been brought to revision rev, or to the newest
// revision if that is lower (after the fan-out's rest, if it owes one). A compaction waits for
// it before it is proposed: a synced watcher must have every event below the compaction
// revision queued before compaction can drop them, as etcd notifies synced watchers at commit.
// (A view that arrives already compacted past revisions the hub never saw, as from a snapshot,
// cancels the watchers that needed them.)
func (h *watchHub) waitRev(ctx context.Context, rev int64) error {
	for {
		h.mu.Lock()
		target := min(rev, h.latest.Load().Rev())
		done, ch := h.core.Rev() >= target, h.advanced
		h.mu.Unlock()
		if done {
			return nil
		}
		h.kick()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-h.stopc:
			return errStopped
		}
	}
}

// open registers a new stream's core.
func (h *watchHub) open(s *watchStream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s.core = h.core.NewStream()
	h.streams[s.core] = s
}

// create registers a watch on s; the core queues its created response (or the refusal) before
// any of its events, as etcd does.
func (h *watchHub) create(s *watchStream, r *pb.WatchCreateRequest) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.advance()
	behind := h.core.Unsynced()
	h.core.Create(s.core, r)
	if h.core.Unsynced() > behind {
		h.kick()
	}
	h.wakeStreams()
}

// refuse answers a create request on s that the server refuses for reason.
func (h *watchHub) refuse(s *watchStream, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.core.Refuse(s.core, reason)
	h.wakeStreams()
}

// cancel cancels watch id of s; an unknown ID gets no answer.
func (h *watchHub) cancel(s *watchStream, id int64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	ok := h.core.Cancel(s.core, id)
	h.wakeStreams()
	return ok
}

// progressAll answers a progress request on s (see watch.Hub.Progress).
func (h *watchHub) progressAll(s *watchStream) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	ok := h.core.Progress(s.core)
	h.wakeStreams()
	return ok
}

// progressTick sends the periodic progress notifications of s.
func (h *watchHub) progressTick(s *watchStream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.core.ProgressTick(s.core)
	h.wakeStreams()
}

// take removes every response queued on s, and encodes the events that several of them share
// (once, for every stream that has them queued) unless they need their prev_kv added.
func (h *watchHub) take(s *watchStream) []watch.Response {
	h.mu.Lock()
	defer h.mu.Unlock()
	qs := h.core.Take(s.core, s.core.Queued())
	for _, q := range qs {
		if sh := q.Shared; sh != nil && sh.Refs > 1 && sh.Encoded == nil && !q.PrevKV() {
			enc, err := appendWatchEvents(nil, sh.List)
			if err != nil {
				h.lg.Error("encoding watch events", zap.Error(err))
				continue
			}
			sh.Encoded = enc
		}
	}
	return qs
}

// sent frees the places of the event responses of qs in their watchers' queues, and wakes the
// hub if a watcher behind may now catch up.
func (h *watchHub) sent(qs []watch.Response) {
	h.mu.Lock()
	defer h.mu.Unlock()
	more := false
	for _, q := range qs {
		if !q.Control() && h.core.Sent(q) {
			more = true
		}
	}
	if more {
		h.kick()
	}
}

// close removes every watcher of s.
func (h *watchHub) close(s *watchStream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.core.Close(s.core)
	delete(h.streams, s.core)
}

// progressInterval is etcd's: the configured interval plus up to 10% jitter.
func progressInterval(base time.Duration) time.Duration {
	return base + time.Duration(rand.Int64N(int64(base)/10+1))
}

// watchStream is one gRPC Watch stream: its watchers and ordered queue live in core.
type watchStream struct {
	hub *watchHub
	srv pb.Watch_WatchServer
	// core is set by hub.open and used under hub.mu.
	core *watch.Stream
	// m checks, for auth, each watch the stream creates.
	m     *Member
	ready chan struct{}
	// ctrlSlots holds a token per control response queued or being decided; the reader takes
	// one before each request, so a client that does not read stops being read.
	ctrlSlots chan struct{}
	closec    chan struct{}
}

func (s *watchStream) kick() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// watchServer serves etcd's Watch service.
type watchServer struct {
	pb.UnimplementedWatchServer
	m *Member
}

func (ws *watchServer) Watch(srv pb.Watch_WatchServer) error {
	m := ws.m
	if requiresLeader(srv.Context()) && m.loop.status.Load().Leader == 0 {
		return rpctypes.ErrGRPCNoLeader
	}
	s := &watchStream{
		hub:       m.watch,
		srv:       srv,
		m:         m,
		ready:     make(chan struct{}, 1),
		ctrlSlots: make(chan struct{}, watchCtrlQueuedMax),
		closec:    make(chan struct{}),
	}
	m.watch.open(s)
	errc := make(chan error, 2)
	sendDone := make(chan struct{})
	go func() {
		if err := s.recvLoop(); err != nil {
			errc <- err
		}
	}()
	go func() {
		defer close(sendDone)
		if err := s.sendLoop(m); err != nil {
			errc <- err
		}
	}()
	var err error
	select {
	case err = <-errc:
	case <-srv.Context().Done():
		err = srv.Context().Err()
	}
	m.watch.close(s)
	close(s.closec)
	<-sendDone
	if errors.Is(err, context.Canceled) {
		err = rpctypes.ErrGRPCWatchCanceled
	}
	return err
}

// recvLoop handles the client's requests until it closes its side (nil: the stream stays open
// for what is being watched, as etcd's) or the stream fails.
func (s *watchStream) recvLoop() error {
	for {
		req, err := s.srv.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case s.ctrlSlots <- struct{}{}:
		case <-s.closec:
			return nil
		}
		answered := false
		switch u := req.RequestUnion.(type) {
		case *pb.WatchRequest_CreateRequest:
			if u.CreateRequest != nil {
				if reason := s.m.watchDenied(s.srv.Context(), u.CreateRequest); reason != "" {
					s.hub.refuse(s, reason)
				} else {
					s.hub.create(s, u.CreateRequest)
				}
				answered = true
			}
		case *pb.WatchRequest_CancelRequest:
			if u.CancelRequest != nil {
				answered = s.hub.cancel(s, u.CancelRequest.WatchId)
			}
		case *pb.WatchRequest_ProgressRequest:
			if u.ProgressRequest != nil {
				answered = s.hub.progressAll(s)
			}
		}
		if !answered {
			<-s.ctrlSlots
		}
	}
}

// sendLoop sends the queued responses in order, and the periodic progress notifications.
func (s *watchStream) sendLoop(m *Member) error {
	t := time.NewTicker(progressInterval(m.cfg.WatchProgressNotifyInterval))
	defer t.Stop()
	maxBytes := m.cfg.RequestBytesMax + grpcOverheadBytes
	for {
		select {
		case <-s.ready:
		case <-t.C:
			s.hub.progressTick(s)
			continue
		case <-s.closec:
			return nil
		}
		if !s.hub.pacer.rest(s.closec) {
			return nil
		}
		start := time.Now()
		var waited time.Duration // beyond watchSendChargedMax, in sends
		qs := s.hub.take(s)
		for i, g := range mergeLagging(qs) {
			sendStart := time.Now()
			if err := s.send(m, g, maxBytes); err != nil {
				return err
			}
			waited += max(0, time.Since(sendStart)-watchSendChargedMax)
			if i%watchSendsYieldEvery == watchSendsYieldEvery-1 {
				runtime.Gosched()
			}
		}
		// One report for the whole batch: the hub's lock is taken once per wakeup, not once per
		// response.
		s.hub.sent(qs)
		now := time.Now()
		s.hub.pacer.charge(now, now.Sub(start)-waited)
	}
}

// mergeLagging groups the responses taken from a stream's queue into the responses to send,
// in order. A watcher with at least watchMergeRunMin event responses in a row (no control
// response of the stream, nor a non-event one of its own, between them) is that many
// revisions behind: its run is sent as one response, at the place of the first, as the
// catch-up of a watcher that fell behind would be. Every other response is a group of its
// own. Moving a watcher's later events forward keeps its order, and no run crosses a control
// response (created, canceled, a stream-wide progress promise).
func mergeLagging(qs []watch.Response) [][]watch.Response {
	if len(qs) < watchMergeRunMin {
		return singles(qs)
	}
	isEvents := func(q watch.Response) bool { return !q.Control() && len(q.Resp.Events) > 0 }
	// runOf numbers each event response's run; open maps a watch ID to its open run.
	runOf, runLen, open := make([]int, len(qs)), []int{}, map[int64]int{}
	for i, q := range qs {
		switch {
		case q.Control():
			clear(open)
		case !isEvents(q):
			delete(open, q.Resp.WatchId)
		default:
			run, ok := open[q.Resp.WatchId]
			if !ok {
				run = len(runLen)
				runLen = append(runLen, 0)
				open[q.Resp.WatchId] = run
			}
			runOf[i] = run
			runLen[run]++
		}
	}
	out := make([][]watch.Response, 0, len(qs))
	groupOf := map[int]int{}
	for i, q := range qs {
		if !isEvents(q) || runLen[runOf[i]] < watchMergeRunMin {
			out = append(out, qs[i:i+1:i+1])
			continue
		}
		if g, ok := groupOf[runOf[i]]; ok {
			out[g] = append(out[g], q)
			continue
		}
		groupOf[runOf[i]] = len(out)
		out = append(out, []watch.Response{q})
	}
	return out
}

func singles(qs []watch.Response) [][]watch.Response {
	out := make([][]watch.Response, len(qs))
	for i := range qs {
		out[i] = qs[i : i+1 : i+1]
	}
	return out
}

// send sends group (one response, or a run of one watcher's event responses merged into one,
// with the last one's header), filling prev_kv from the newest view (as etcd reads it when
// sending) and fragmenting where asked.
func (s *watchStream) send(m *Member, group []watch.Response, maxBytes int) error {
	q, r := group[0], group[0].Resp
	if len(group) > 1 {
		r = &pb.WatchResponse{Header: group[len(group)-1].Resp.Header, WatchId: r.WatchId}
		for _, g := range group {
			r.Events = append(r.Events, g.Resp.Events...)
		}
	}
	m.header(r.Header)
	switch {
	case q.Control():
		err := s.srv.Send(r)
		<-s.ctrlSlots
		return err
	case q.PrevKV():
		r = watch.WithPrevKV(m.loop.view.Load(), r)
	case len(r.Events) > 0:
		encs := make([][]byte, len(group))
		for i, g := range group {
			if sh := g.Shared; sh != nil && sh.Refs > 1 {
				encs[i] = sh.Encoded
			} else {
				// These events are this response's alone: encoded here, outside the hub's lock.
				var err error
				if encs[i], err = appendWatchEvents(nil, g.Resp.Events); err != nil {
					return err
				}
			}
			if encs[i] == nil {
				return s.sendPlain(q, r, maxBytes)
			}
		}
		p := newPreEncoded(r, encs...)
		if !q.Fragment() || p.Len() < maxBytes || len(r.Events) < 2 {
			return s.srv.SendMsg(p)
		}
	}
	return s.sendPlain(q, r, maxBytes)
}

// sendPlain sends r through grpc's proto codec, in fragments if q's watcher asked.
func (s *watchStream) sendPlain(q watch.Response, r *pb.WatchResponse, maxBytes int) error {
	if q.Fragment() {
		return sendFragments(r, maxBytes, s.srv.Send)
	}
	return s.srv.Send(r)
}

// sendFragments sends r in parts of under maxBytes each when it is that large and has several
// events, as etcd's: every part but the last has fragment set, and each holds at least one event.
func sendFragments(r *pb.WatchResponse, maxBytes int, send func(*pb.WatchResponse) error) error {
	if proto.Size(r) < maxBytes || len(r.Events) < 2 {
		return send(r)
	}
	for idx := 0; idx < len(r.Events); {
		cur := &pb.WatchResponse{Header: r.Header, WatchId: r.WatchId, Created: r.Created, Canceled: r.Canceled,
			CompactRevision: r.CompactRevision, CancelReason: r.CancelReason, Fragment: true, Events: []*mvccpb.Event{}}
		for _, ev := range r.Events[idx:] {
			cur.Events = append(cur.Events, ev)
			if len(cur.Events) > 1 && proto.Size(cur) >= maxBytes {
				cur.Events = cur.Events[:len(cur.Events)-1]
				break
			}
			idx++
		}
		cur.Fragment = idx < len(r.Events)
		if err := send(cur); err != nil {
			return err
		}
	}
	return nil
}

// requiresLeader reports whether the client asked, with etcd's hasleader metadata, that the
// stream be served only while there is a leader.
func requiresLeader(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return false
	}
	vs := md[rpctypes.MetadataRequireLeaderKey]
	return len(vs) > 0 && vs[0] == rpctypes.MetadataHasLeader
}

// startWatch starts the member's watch hub from the newest view and has the loop feed it.
func (m *Member) startWatch() {
	m.watch = newWatchHub(m.lg.Named("watch"), m.loop.view.Load())
	m.loop.watch.Store(m.watch)
	m.watch.publish(m.loop.view.Load())
	go m.watch.run()
}
