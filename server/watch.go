package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
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
)

// Limits of watch.
const (
	// watchQueuedResponsesMax is how many event responses of one watcher may wait in its
	// stream's send queue. A synced watcher that would exceed it falls behind into the unsynced
	// set and later catches up from the history, so a slow stream never holds more than this per
	// watcher and never slows apply or the other streams.
	watchQueuedResponsesMax = 128
	// watchBatchRevsMax is how many distinct revisions one catch-up response may carry (etcd's
	// watchBatchMaxRevs).
	watchBatchRevsMax = 1000
	// watchReadEventsMax bounds the events one history read returns.
	watchReadEventsMax = 4096
	// watchScanEventsMax bounds the history events one catch-up pass scans for one watcher, so a
	// watcher that matches little in a long history cannot hold the hub for long.
	watchScanEventsMax = 1 << 16
	// watchSyncInterval is how often the hub retries unsynced watchers when nothing else wakes
	// it (etcd's syncWatchers period).
	watchSyncInterval = 100 * time.Millisecond
	// watchCtrlQueuedMax bounds the control responses (created, canceled, progress) waiting in
	// one stream's send queue; the stream stops reading requests beyond it.
	watchCtrlQueuedMax = 16
	// watchProgressIntervalMin is etcd's minWatchProgressInterval.
	watchProgressIntervalMin = 100 * time.Millisecond
	// watchProgressIntervalDefault is --watch-progress-notify-interval's default.
	watchProgressIntervalDefault = 10 * time.Minute
)

// etcd's watch error texts, which clients match exactly.
var (
	errWatcherRangeEmpty = errors.New("mvcc: watcher range is empty")
	errWatcherDuplicate  = errors.New("mvcc: duplicate watch ID provided on the WatchStream")
)

// watcherState is where a watcher is in the hub.
type watcherState int

const (
	// watcherSynced: every event below minRev is queued; new revisions are pushed to it.
	watcherSynced watcherState = iota
	// watcherUnsynced: it catches up from the history, from minRev.
	watcherUnsynced
	// watcherCompacted: its next revision was compacted; it was told so and gets nothing more,
	// but keeps its ID on the stream until canceled (as in etcd).
	watcherCompacted
	// watcherCanceled: removed.
	watcherCanceled
)

// watcher is one watch on a stream.
type watcher struct {
	s  *watchStream
	id int64
	// key and end are etcd's: end nil watches key alone, end empty every key >= key, otherwise
	// [key, end).
	key, end []byte
	// startRev is the requested start revision (0: now).
	startRev         int64
	noPut, noDelete  bool
	prevKV, fragment bool
	progressNotify   bool
	// state and minRev are guarded by the hub's mu.
	// Invariant: every event w wants with revision < minRev is queued or sent, none at or above
	// it is. A synced watcher also has every event it wants at or below the hub's rev queued:
	// its minRev may lag over revisions that had nothing for it, and is at least its start.
	state  watcherState
	minRev int64
	// queued counts this watcher's responses in the send queue (events, progress notifications,
	// its compaction cancel).
	// Invariant: <= watchQueuedResponsesMax, plus one for a compaction cancel.
	queued atomic.Int32
	// quiet is cleared when events are sent and set at each progress tick: a progress_notify
	// watcher gets a notification at a tick only if nothing was sent since the last one.
	quiet atomic.Bool
}

func (w *watcher) matches(key []byte) bool {
	switch {
	case w.end == nil:
		return bytes.Equal(key, w.key)
	case len(w.end) == 0:
		return bytes.Compare(key, w.key) >= 0
	}
	return bytes.Compare(key, w.key) >= 0 && bytes.Compare(key, w.end) < 0
}

// filter returns the events w wants, in order; evs is not modified.
func (w *watcher) filter(evs []*mvccpb.Event) []*mvccpb.Event {
	var out []*mvccpb.Event
	for _, ev := range evs {
		if !w.matches(ev.Kv.Key) ||
			(w.noPut && ev.Type == mvccpb.Event_PUT) || (w.noDelete && ev.Type == mvccpb.Event_DELETE) {
			continue
		}
		out = append(out, ev)
	}
	return out
}

// watchHub feeds every watcher of a member from the read views the loop publishes. The loop only
// stores the newest view and wakes the hub (publish never blocks); the hub's goroutine reads the
// events of the new revisions from the view's history and queues them on the streams of the
// synced watchers, and brings unsynced watchers forward from the history in bounded batches.
type watchHub struct {
	lg *zap.Logger
	// latest is the newest view the loop published.
	latest atomic.Pointer[mvcc.View]
	wake   chan struct{}
	stopc  chan struct{}
	donec  chan struct{}

	mu sync.Mutex
	// view is the view the watchers have been brought to; rev is its revision.
	// Invariant: every synced watcher has all events <= rev queued.
	view *mvcc.View
	rev  int64
	// keyed indexes the synced single-key watchers by key; ranged holds the other synced ones.
	keyed    map[string]map[*watcher]struct{}
	ranged   map[*watcher]struct{}
	unsynced map[*watcher]struct{}
	// behind is len(unsynced), for the senders to know whether a drained queue may let a
	// watcher catch up.
	behind atomic.Int32
	// advanced is closed, and replaced, each time rev moves.
	advanced chan struct{}
}

func newWatchHub(lg *zap.Logger, v *mvcc.View) *watchHub {
	h := &watchHub{
		lg:       lg,
		wake:     make(chan struct{}, 1),
		stopc:    make(chan struct{}),
		donec:    make(chan struct{}),
		view:     v,
		rev:      v.Rev(),
		keyed:    map[string]map[*watcher]struct{}{},
		ranged:   map[*watcher]struct{}{},
		unsynced: map[*watcher]struct{}{},
		advanced: make(chan struct{}),
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
	for {
		select {
		case <-h.wake:
		case <-t.C:
		case <-h.stopc:
			return
		}
		h.mu.Lock()
		h.advance()
		h.syncUnsynced()
		h.behind.Store(int32(len(h.unsynced)))
		h.mu.Unlock()
	}
}

func (h *watchHub) stop() {
	close(h.stopc)
	<-h.donec
}

// advance brings the synced watchers to the latest view: one response per revision and
// watcher, with header.revision that revision, as etcd notifies at each commit. Called with mu.
func (h *watchHub) advance() {
	v := h.latest.Load()
	if v == h.view {
		return
	}
	if v.Rev() < h.rev {
		// Never send events back in time (etcd #15271): keep serving from the hub's view.
		h.lg.Error("ignoring a view older than the watchers' revision", zap.Int64("view-revision", v.Rev()), zap.Int64("watch-revision", h.rev))
		return
	}
	for from := h.rev + 1; from <= v.Rev(); {
		evs, next, err := v.Events(from, watchReadEventsMax)
		if err != nil {
			// The view was compacted past history the hub never saw (a snapshot was installed,
			// or a compaction applied with the writes it compacts): the synced watchers catch
			// up, or learn of the compaction, like unsynced ones.
			h.lg.Warn("watch history compacted before it reached the watchers", zap.Int64("from", from), zap.Int64("compact-revision", v.CompactRev()))
			h.desyncAll()
			break
		}
		for i := 0; i < len(evs); {
			j := i
			for j < len(evs) && evs[j].Kv.ModRevision == evs[i].Kv.ModRevision {
				j++
			}
			h.notify(evs[i].Kv.ModRevision, evs[i:j])
			i = j
		}
		from = next
	}
	if v.Rev() != h.rev {
		close(h.advanced)
		h.advanced = make(chan struct{})
	}
	h.view, h.rev = v, v.Rev()
}

// waitRev returns once the watchers have been brought to revision rev, or to the newest
// revision if that is lower. A compaction waits for it before it is proposed: a synced watcher
// must have every event below the compaction revision queued before compaction can drop them,
// as etcd notifies synced watchers at commit. (A view that arrives already compacted past
// revisions the hub never saw, as from a snapshot, cancels the watchers that needed them.)
func (h *watchHub) waitRev(ctx context.Context, rev int64) error {
	for {
		h.mu.Lock()
		target := min(rev, h.latest.Load().Rev())
		done, ch := h.rev >= target, h.advanced
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

// notify queues the events of revision rev on each synced watcher that wants some of them.
func (h *watchHub) notify(rev int64, evs []*mvccpb.Event) {
	targets := map[*watcher]struct{}{}
	for _, ev := range evs {
		for w := range h.keyed[string(ev.Kv.Key)] {
			targets[w] = struct{}{}
		}
	}
	for w := range h.ranged {
		targets[w] = struct{}{}
	}
	for w := range targets {
		if w.minRev > rev {
			continue // a future start revision
		}
		wevs := w.filter(evs)
		if len(wevs) == 0 {
			w.minRev = rev + 1
			continue
		}
		if w.queued.Load() >= watchQueuedResponsesMax {
			w.minRev = rev
			h.desync(w)
			continue
		}
		w.minRev = rev + 1
		w.s.queueEvents(w, &pb.WatchResponse{WatchId: w.id, Events: wevs, Header: &pb.ResponseHeader{Revision: rev}})
	}
}

// syncUnsynced brings unsynced watchers forward from the hub's view: a watcher whose next
// revision was compacted is canceled with the compaction revision; one with room in its queue
// gets the events of up to watchBatchRevsMax revisions in one response with header.revision the
// view's, as etcd's syncWatchers; one that has caught up becomes synced. Called with mu.
func (h *watchHub) syncUnsynced() {
	more := false
	defer func() {
		if more {
			h.kick() // a watcher with room in its queue is still behind: go on soon
		}
	}()
	for w := range h.unsynced {
		if w.minRev < h.view.CompactRev() {
			h.compacted(w)
			continue
		}
		if w.queued.Load() >= watchQueuedResponsesMax {
			continue
		}
		evs, next, err := h.catchUp(w)
		if err != nil {
			h.compacted(w)
			continue
		}
		if len(evs) > 0 {
			w.s.queueEvents(w, &pb.WatchResponse{WatchId: w.id, Events: evs, Header: &pb.ResponseHeader{Revision: h.rev}})
		}
		w.minRev = next
		if next > h.rev {
			delete(h.unsynced, w)
			h.addSynced(w)
		} else if w.queued.Load() < watchQueuedResponsesMax {
			more = true
		}
	}
}

// catchUp reads w's events from w.minRev: at most watchBatchRevsMax distinct revisions of them
// and at most watchScanEventsMax events scanned. next is the revision to go on from.
func (h *watchHub) catchUp(w *watcher) (evs []*mvccpb.Event, next int64, err error) {
	revs, scanned, last := 0, 0, int64(0)
	next = w.minRev
	for next <= h.rev && scanned < watchScanEventsMax {
		batch, n, err := h.view.Events(next, watchReadEventsMax)
		if err != nil {
			return nil, next, err
		}
		scanned += len(batch)
		for _, ev := range w.filter(batch) {
			if ev.Kv.ModRevision != last {
				if revs == watchBatchRevsMax {
					return evs, ev.Kv.ModRevision, nil
				}
				revs++
				last = ev.Kv.ModRevision
			}
			evs = append(evs, ev)
		}
		next = n
	}
	return evs, next, nil
}

// compacted tells w its next revision is compacted and stops feeding it. Called with mu.
func (h *watchHub) compacted(w *watcher) {
	h.remove(w)
	w.state = watcherCompacted
	w.s.queueEvents(w, &pb.WatchResponse{WatchId: w.id, Canceled: true, CompactRevision: h.view.CompactRev(), Header: &pb.ResponseHeader{}})
}

// desyncAll moves every synced watcher to the unsynced set, to go on after the hub's rev.
func (h *watchHub) desyncAll() {
	for _, ws := range h.keyed {
		for w := range ws {
			w.minRev = max(w.minRev, h.rev+1)
			h.desync(w)
		}
	}
	for w := range h.ranged {
		w.minRev = max(w.minRev, h.rev+1)
		h.desync(w)
	}
}

// desync moves a synced watcher to the unsynced set; the caller has set its minRev to the first
// revision not queued.
func (h *watchHub) desync(w *watcher) {
	h.remove(w)
	w.state = watcherUnsynced
	h.unsynced[w] = struct{}{}
	h.behind.Store(int32(len(h.unsynced)))
}

func (h *watchHub) addSynced(w *watcher) {
	w.state = watcherSynced
	if w.end != nil {
		h.ranged[w] = struct{}{}
		return
	}
	ws := h.keyed[string(w.key)]
	if ws == nil {
		ws = map[*watcher]struct{}{}
		h.keyed[string(w.key)] = ws
	}
	ws[w] = struct{}{}
}

// remove takes w out of whichever set holds it. Called with mu.
func (h *watchHub) remove(w *watcher) {
	switch w.state {
	case watcherUnsynced:
		delete(h.unsynced, w)
	case watcherSynced:
		if w.end != nil {
			delete(h.ranged, w)
			return
		}
		ws := h.keyed[string(w.key)]
		delete(ws, w)
		if len(ws) == 0 {
			delete(h.keyed, string(w.key))
		}
	}
}

// create registers a watch on s, queueing its created response (or the refusal) before any of
// its events, as etcd does.
func (h *watchHub) create(s *watchStream, r *pb.WatchCreateRequest) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.advance()
	refuse := func(reason string) {
		s.queueCtrl(&pb.WatchResponse{WatchId: -1, Created: true, Canceled: true, CancelReason: reason,
			Header: &pb.ResponseHeader{Revision: h.rev}})
	}
	key := r.Key
	if len(key) == 0 {
		key = []byte{0}
	}
	if r.StartRevision < 0 {
		refuse(rpctypes.ErrCompacted.Error())
		return
	}
	var end []byte
	switch {
	case len(r.RangeEnd) == 1 && r.RangeEnd[0] == 0:
		end = []byte{}
	case len(r.RangeEnd) > 0:
		end = r.RangeEnd
		if bytes.Compare(key, end) >= 0 {
			refuse(errWatcherRangeEmpty.Error())
			return
		}
	}
	id := r.WatchId
	if id != 0 {
		if _, dup := s.watchers[id]; dup {
			refuse(errWatcherDuplicate.Error())
			return
		}
	} else {
		for s.watchers[s.nextID] != nil {
			s.nextID++
		}
		id = s.nextID
		s.nextID++
	}
	w := &watcher{s: s, id: id, key: key, end: end, startRev: r.StartRevision,
		prevKV: r.PrevKv, fragment: r.Fragment, progressNotify: r.ProgressNotify}
	w.quiet.Store(true)
	for _, f := range r.Filters {
		switch f {
		case pb.WatchCreateRequest_NOPUT:
			w.noPut = true
		case pb.WatchCreateRequest_NODELETE:
			w.noDelete = true
		}
	}
	s.watchers[id] = w
	s.queueCtrl(&pb.WatchResponse{WatchId: id, Created: true, Header: &pb.ResponseHeader{Revision: h.rev}})
	if r.StartRevision == 0 || r.StartRevision > h.rev {
		w.minRev = max(h.rev+1, r.StartRevision)
		h.addSynced(w)
		return
	}
	// A past start revision catches up from the history; one below the compaction revision is
	// canceled with it right after the created response.
	w.minRev = r.StartRevision
	w.state = watcherUnsynced
	h.unsynced[w] = struct{}{}
	h.behind.Store(int32(len(h.unsynced)))
	h.kick()
}

// cancel cancels watch id of s; an unknown ID gets no answer.
func (h *watchHub) cancel(s *watchStream, id int64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	w, ok := s.watchers[id]
	if !ok {
		return false
	}
	h.remove(w)
	w.state = watcherCanceled
	delete(s.watchers, id)
	s.queueCtrl(&pb.WatchResponse{WatchId: id, Canceled: true, Header: &pb.ResponseHeader{Revision: h.rev}})
	return true
}

// progressAll answers a progress request on s: if every watcher of s is synced, one response
// with watch_id -1 and the hub's revision, as etcd's progressIfSync; it promises that every
// event at or below that revision was queued before it. It reports whether it answered.
func (h *watchHub) progressAll(s *watchStream) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(s.watchers) == 0 {
		return false
	}
	for _, w := range s.watchers {
		if w.state != watcherSynced || h.rev < w.startRev {
			return false
		}
	}
	s.queueCtrl(&pb.WatchResponse{WatchId: -1, Header: &pb.ResponseHeader{Revision: h.rev}})
	return true
}

// progressTick sends the periodic progress notifications of s: to each progress_notify watcher
// that is synced, has room in its queue and got no events since the last tick.
func (h *watchHub) progressTick(s *watchStream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, w := range s.watchers {
		if !w.progressNotify || !w.quiet.Swap(true) {
			continue
		}
		if w.state != watcherSynced || h.rev < w.startRev || w.queued.Load() >= watchQueuedResponsesMax {
			continue
		}
		s.queueEvents(w, &pb.WatchResponse{WatchId: w.id, Header: &pb.ResponseHeader{Revision: h.rev}})
	}
}

// close removes every watcher of s.
func (h *watchHub) close(s *watchStream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, w := range s.watchers {
		h.remove(w)
		w.state = watcherCanceled
		delete(s.watchers, id)
	}
}

// progressInterval is etcd's: the configured interval plus up to 10% jitter.
func progressInterval(base time.Duration) time.Duration {
	return base + time.Duration(rand.Int64N(int64(base)/10+1))
}

// queuedResp is one response waiting in a stream's send queue.
type queuedResp struct {
	// w is the watcher an event response or a progress notification belongs to; nil for a
	// control response.
	w    *watcher
	resp *pb.WatchResponse
}

// watchStream is one gRPC Watch stream: many watchers, one ordered send queue.
type watchStream struct {
	hub *watchHub
	srv pb.Watch_WatchServer
	// m checks, for auth, each watch the stream creates.
	m *Member
	// watchers and nextID are guarded by hub.mu. IDs are per stream, from 0.
	watchers map[int64]*watcher
	nextID   int64

	qmu sync.Mutex
	// queue holds the responses in the order they must be sent.
	// Invariant: bounded by watchQueuedResponsesMax+1 per watcher plus watchCtrlQueuedMax.
	queue []queuedResp
	ready chan struct{}
	// ctrlSlots holds a token per control response queued or being decided; the reader takes
	// one before each request, so a client that does not read stops being read.
	ctrlSlots chan struct{}
	closec    chan struct{}
}

func (s *watchStream) push(q queuedResp) {
	s.qmu.Lock()
	s.queue = append(s.queue, q)
	s.qmu.Unlock()
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

func (s *watchStream) queueCtrl(r *pb.WatchResponse) { s.push(queuedResp{resp: r}) }

func (s *watchStream) queueEvents(w *watcher, r *pb.WatchResponse) {
	w.queued.Add(1)
	s.push(queuedResp{w: w, resp: r})
}

func (s *watchStream) take() []queuedResp {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	q := s.queue
	s.queue = nil
	return q
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
		watchers:  map[int64]*watcher{},
		ready:     make(chan struct{}, 1),
		ctrlSlots: make(chan struct{}, watchCtrlQueuedMax),
		closec:    make(chan struct{}),
	}
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
					s.queueCtrl(&pb.WatchResponse{WatchId: -1, Created: true, Canceled: true, CancelReason: reason,
						Header: &pb.ResponseHeader{Revision: s.m.loop.view.Load().Rev()}})
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

// sendLoop sends the queued responses in order, filling prev_kv from the newest view (as etcd
// reads it when sending) and fragmenting where asked, and sends the periodic progress
// notifications.
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
		for _, q := range s.take() {
			r := q.resp
			m.header(r.Header)
			var err error
			if q.w == nil {
				err = s.srv.Send(r)
				<-s.ctrlSlots
			} else {
				if q.w.prevKV && len(r.Events) > 0 {
					r = withPrevKV(m.loop.view.Load(), r)
				}
				if q.w.fragment {
					err = sendFragments(r, maxBytes, s.srv.Send)
				} else {
					err = s.srv.Send(r)
				}
				if len(r.Events) > 0 {
					q.w.quiet.Store(false)
				}
				if n := q.w.queued.Add(-1); (n == 0 || n == watchQueuedResponsesMax/2) && s.hub.behind.Load() > 0 {
					s.hub.kick()
				}
			}
			if err != nil {
				return err
			}
		}
	}
}

// withPrevKV returns r with its events copied (they are shared with other watchers) and each
// given the key's previous version, read at mod_revision-1 as etcd reads it: none for a
// creation, and none once that revision is compacted.
func withPrevKV(v *mvcc.View, r *pb.WatchResponse) *pb.WatchResponse {
	out := &pb.WatchResponse{Header: r.Header, WatchId: r.WatchId, Events: make([]*mvccpb.Event, len(r.Events))}
	for i, ev := range r.Events {
		e := &mvccpb.Event{Type: ev.Type, Kv: ev.Kv}
		if !(ev.Type == mvccpb.Event_PUT && ev.Kv.CreateRevision == ev.Kv.ModRevision) {
			res, err := v.Range(ev.Kv.Key, nil, mvcc.RangeOptions{Rev: ev.Kv.ModRevision - 1})
			if err == nil && len(res.KVs) > 0 {
				e.PrevKv = res.KVs[0]
			}
		}
		out.Events[i] = e
	}
	return out
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
