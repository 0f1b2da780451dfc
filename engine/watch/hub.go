package watch

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unsafe"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"

	"github.com/basaltdb/basalt/engine/mvcc"
)

// etcd's watch error texts, which clients match exactly (hence not "watch: ...").
var (
	// ErrRangeEmpty is the cancel reason of a create whose range_end is not above its key.
	ErrRangeEmpty = errors.New("mvcc: watcher range is empty")
	// ErrDuplicateID is the cancel reason of a create whose watch_id is in use on its stream.
	ErrDuplicateID = errors.New("mvcc: duplicate watch ID provided on the WatchStream")
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
	s *Stream
	// seq orders watchers across the hub (creation order), so that every pass visits them in
	// the same order.
	seq uint64
	id  int64
	// key and end are etcd's: end nil watches key alone, end empty every key >= key, otherwise
	// [key, end).
	key, end []byte
	// startRev is the requested start revision (0: now).
	startRev         int64
	noPut, noDelete  bool
	prevKV, fragment bool
	progressNotify   bool
	state            watcherState
	// Invariant: every event w wants with revision < minRev is queued or sent, none at or above
	// it is. A synced watcher also has every event it wants at or below the hub's rev queued:
	// its minRev may lag over revisions that had nothing for it, and is at least its start.
	minRev int64
	// queued counts this watcher's responses queued or taken and not yet Sent (events,
	// progress notifications, its compaction cancel).
	// Invariant: <= QueuedResponsesMax, plus one for a compaction cancel.
	queued int
	// quiet is cleared when events are sent and set at each progress tick: a progress_notify
	// watcher gets a notification at a tick only if nothing was sent since the last one.
	quiet bool
}

// wants reports whether w wants ev (its key, and not filtered out).
func (w *watcher) wants(ev *mvccpb.Event) bool {
	return w.matches(ev.Kv.Key) &&
		!(w.noPut && ev.Type == mvccpb.Event_PUT) && !(w.noDelete && ev.Type == mvccpb.Event_DELETE)
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
		if w.wants(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// Events is a list of events that the responses of several watchers carry unchanged: the
// events of one revision (or the part of them) that each of these watchers wants. A host that
// encodes responses itself encodes the list once and shares the bytes among them.
type Events struct {
	List []*mvccpb.Event
	// Refs is how many responses carry List; it is final once Publish returns.
	Refs int
	// Encoded is the host's: List's encoding, which it fills at most once, under the lock it
	// calls the hub with, when Refs > 1.
	Encoded []byte
}

// Response is one response waiting to be sent on a stream.
type Response struct {
	Resp *pb.WatchResponse
	// Shared, when not nil, is what Resp.Events is taken from: Resp.Events == Shared.List.
	Shared *Events
	// w is the watcher an event response or a progress notification belongs to; nil for a
	// control response (created, canceled, a stream-wide progress).
	w *watcher
}

// Control reports whether r answers a request (created, canceled or a stream-wide progress)
// rather than carrying a watcher's events or progress notification.
func (r Response) Control() bool { return r.w == nil }

// PrevKV reports whether r's events must carry their previous key-values (see WithPrevKV).
func (r Response) PrevKV() bool { return r.w != nil && r.w.prevKV && len(r.Resp.Events) > 0 }

// Fragment reports whether the watcher asked that large responses be split.
func (r Response) Fragment() bool { return r.w != nil && r.w.fragment }

// Stream is one client watch stream: many watchers, one ordered queue of responses.
type Stream struct {
	// watchers maps the stream's watch IDs, from 0, to their watchers.
	watchers map[int64]*watcher
	nextID   int64
	// queue holds the responses in the order they must be sent.
	// Invariant: at most QueuedResponsesMax+1 per watcher, plus the control responses, which
	// the host bounds by how many requests it lets in before their answers are sent.
	queue []Response
	// woken is set while the stream is in its hub's woken list.
	woken bool
}

// Queued returns how many responses wait in s's queue.
func (s *Stream) Queued() int { return len(s.queue) }

// Hub feeds every watcher of a member from the views the member publishes.
type Hub struct {
	lg *zap.Logger
	// view is the view the watchers have been brought to; rev is its revision.
	// Invariant: every synced watcher has all events <= rev queued.
	view *mvcc.View
	rev  int64
	// keyed indexes the synced single-key watchers by key; ranged holds the other synced ones.
	// Invariant: each list is sorted by seq (creation order), so that a revision's watchers
	// are visited in that order without sorting them per revision.
	keyed    map[string][]*watcher
	ranged   []*watcher
	unsynced map[*watcher]struct{}
	nextSeq  uint64
	// targets is notify's scratch list of the watchers a revision may concern.
	targets []*watcher
	// woken lists the streams whose queue grew since the host last called Woken.
	woken []*Stream
}

// New returns a hub whose watchers start from view v. A nil logger discards the logs.
func New(lg *zap.Logger, v *mvcc.View) *Hub {
	if lg == nil {
		lg = zap.NewNop()
	}
	return &Hub{
		lg:       lg,
		view:     v,
		rev:      v.Rev(),
		keyed:    map[string][]*watcher{},
		unsynced: map[*watcher]struct{}{},
	}
}

// Rev returns the revision the watchers have been brought to.
func (h *Hub) Rev() int64 { return h.rev }

// Unsynced returns how many watchers are behind, catching up from the history.
func (h *Hub) Unsynced() int { return len(h.unsynced) }

// Behind lists the watchers that are behind as "id@next revision", sorted, for tests and
// traces.
func (h *Hub) Behind() []string {
	var out []string
	for _, w := range sortedSet(h.unsynced) {
		out = append(out, fmt.Sprintf("%d@%d", w.id, w.minRev))
	}
	slices.Sort(out)
	return out
}

// NewStream returns a stream with no watchers.
func (h *Hub) NewStream() *Stream { return &Stream{watchers: map[int64]*watcher{}} }

// Woken returns the streams whose queue grew since the last call, in the order they grew, so
// that the host can wake their senders.
func (h *Hub) Woken() []*Stream {
	out := h.woken
	h.woken = nil
	for _, s := range out {
		s.woken = false
	}
	return out
}

func (h *Hub) push(s *Stream, r Response) {
	if r.w != nil {
		r.w.queued++
	}
	s.queue = append(s.queue, r)
	if !s.woken {
		s.woken = true
		h.woken = append(h.woken, s)
	}
}

// Take removes up to n responses from the front of s's queue. The host sends them in order
// and reports each one Sent.
func (h *Hub) Take(s *Stream, n int) []Response {
	n = min(n, len(s.queue))
	out := s.queue[:n:n]
	s.queue = slices.Clone(s.queue[n:])
	return out
}

// Sent reports that r, taken from its stream, was sent (or dropped with its stream): it frees
// r's place in its watcher's queue. It returns true when a watcher behind may now catch up, so
// the host should call Sync soon.
func (h *Hub) Sent(r Response) bool {
	w := r.w
	if w == nil {
		return false
	}
	if len(r.Resp.Events) > 0 {
		w.quiet = false
	}
	if w.queued <= 0 {
		panic(fmt.Sprintf("watch: watcher %d sent a response it had not queued (queued=%d)", w.id, w.queued))
	}
	w.queued--
	return (w.queued == 0 || w.queued == QueuedResponsesMax/2) && len(h.unsynced) > 0
}

// Publish brings the synced watchers to view v: one response per revision and watcher, with
// header.revision that revision, as etcd notifies at each commit. A view older than the
// watchers' revision is ignored, so events never go back in time (etcd #15271).
func (h *Hub) Publish(v *mvcc.View) {
	if v == h.view {
		return
	}
	if v.Rev() < h.rev {
		h.lg.Error("ignoring a view older than the watchers' revision", zap.Int64("view-revision", v.Rev()), zap.Int64("watch-revision", h.rev))
		return
	}
	if len(h.keyed) == 0 && len(h.ranged) == 0 {
		// No synced watcher to notify (unsynced ones read the history themselves). The skip
		// below would pass over every revision too, but would look at each, and warn of a
		// compacted history (after a snapshot install) that concerns no one.
		h.view, h.rev = v, v.Rev()
		return
	}
	for from := h.rev + 1; from <= v.Rev(); {
		// Revisions that change no key a synced watcher wants are skipped unread: reading their
		// events costs a lookup per change, for nothing (most writes, when watchers are spread
		// over many keys). Their watchers' minRev lags over them, as the invariant allows.
		for from <= v.Rev() {
			if wanted, ok := v.AnyChanged(from, h.wanted); !ok || wanted {
				break
			}
			from++
		}
		if from > v.Rev() {
			break
		}
		evs, next, err := v.Events(from, readEventsMax)
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
	h.view, h.rev = v, v.Rev()
}

// wanted reports whether a synced watcher watches key.
func (h *Hub) wanted(key string) bool {
	if _, ok := h.keyed[key]; ok {
		return true
	}
	kb := unsafe.Slice(unsafe.StringData(key), len(key)) // only read
	for _, w := range h.ranged {
		if w.matches(kb) {
			return true
		}
	}
	return false
}

// notify queues the events of revision rev on each synced watcher that wants some of them.
// Watchers that want the same events get them in one shared Events.
func (h *Hub) notify(rev int64, evs []*mvccpb.Event) {
	evs = evs[:len(evs):len(evs)]
	var all *Events
	var subsets map[string]*Events
	for _, w := range h.revTargets(evs) {
		if w.minRev > rev {
			continue // a future start revision
		}
		var shared *Events
		switch n := countWanted(w, evs); {
		case n == 0:
			w.minRev = rev + 1
			continue
		case n == len(evs):
			if all == nil {
				all = &Events{List: evs}
			}
			shared = all
		default:
			if subsets == nil {
				subsets = map[string]*Events{}
			}
			var key []byte
			for i, ev := range evs {
				if w.wants(ev) {
					key = binary.AppendUvarint(key, uint64(i))
				}
			}
			if shared = subsets[string(key)]; shared == nil {
				shared = &Events{List: w.filter(evs)}
				subsets[string(key)] = shared
			}
		}
		if w.queued >= QueuedResponsesMax {
			w.minRev = rev
			h.desync(w)
			continue
		}
		w.minRev = rev + 1
		shared.Refs++
		h.push(w.s, Response{w: w, Shared: shared,
			Resp: &pb.WatchResponse{WatchId: w.id, Events: shared.List, Header: &pb.ResponseHeader{Revision: rev}}})
	}
}

// countWanted returns how many of evs w wants.
func countWanted(w *watcher, evs []*mvccpb.Event) int {
	n := 0
	for _, ev := range evs {
		if w.wants(ev) {
			n++
		}
	}
	return n
}

// revTargets returns, in creation order, the synced watchers that may want some of evs: those
// of their keys and the ranged ones. The list is scratch, valid until the next call.
func (h *Hub) revTargets(evs []*mvccpb.Event) []*watcher {
	out, lists := h.targets[:0], 0
	for _, ev := range evs {
		if ws := h.keyed[string(ev.Kv.Key)]; len(ws) > 0 {
			out = append(out, ws...)
			lists++
		}
	}
	if len(h.ranged) > 0 {
		out = append(out, h.ranged...)
		lists++
	}
	if lists > 1 {
		// A key may occur twice in a revision (a delete and a put in one txn): its watchers
		// appear twice.
		slices.SortFunc(out, func(a, b *watcher) int { return cmp.Compare(a.seq, b.seq) })
		out = slices.Compact(out)
	}
	h.targets = out
	return out
}

// sortedSet returns the watchers of set in creation order.
func sortedSet(set map[*watcher]struct{}) []*watcher {
	out := make([]*watcher, 0, len(set))
	for w := range set {
		out = append(out, w)
	}
	slices.SortFunc(out, func(a, b *watcher) int { return cmp.Compare(a.seq, b.seq) })
	return out
}

// Sync brings unsynced watchers forward from the hub's view: a watcher whose next revision was
// compacted is canceled with the compaction revision; one with room in its queue gets the
// events of up to batchRevsMax revisions in one response with header.revision the view's, as
// etcd's syncWatchers; one that has caught up becomes synced. It returns true when a watcher
// with room in its queue is still behind, so the host should call Sync again soon.
func (h *Hub) Sync() (more bool) {
	// Watchers that fell behind together (the watchers of one key on one slow stream) catch
	// up alike: each distinct catch-up is read once and its events shared.
	memo := map[catchUpKey]catchUpResult{}
	for _, w := range sortedSet(h.unsynced) {
		if w.minRev < h.view.CompactRev() {
			h.compacted(w)
			continue
		}
		if w.queued >= QueuedResponsesMax {
			continue
		}
		k := catchUpKey{key: string(w.key), end: string(w.end), ranged: w.end != nil, noPut: w.noPut, noDelete: w.noDelete, minRev: w.minRev}
		res, ok := memo[k]
		if !ok {
			var evs []*mvccpb.Event
			evs, res.next, res.err = h.catchUp(w)
			if len(evs) > 0 {
				res.shared = &Events{List: evs}
			}
			memo[k] = res
		}
		if res.err != nil {
			h.compacted(w)
			continue
		}
		if res.shared != nil {
			res.shared.Refs++
			h.push(w.s, Response{w: w, Shared: res.shared,
				Resp: &pb.WatchResponse{WatchId: w.id, Events: res.shared.List, Header: &pb.ResponseHeader{Revision: h.rev}}})
		}
		w.minRev = res.next
		if res.next > h.rev {
			delete(h.unsynced, w)
			h.addSynced(w)
		} else if w.queued < QueuedResponsesMax {
			more = true
		}
	}
	return more
}

// catchUpKey is what a catch-up read depends on besides the hub's view.
type catchUpKey struct {
	key, end        string
	ranged          bool
	noPut, noDelete bool
	minRev          int64
}

// catchUpResult is a catch-up read (see catchUp).
type catchUpResult struct {
	shared *Events
	next   int64
	err    error
}

// catchUp reads w's events from w.minRev: at most batchRevsMax distinct revisions of them and
// at most scanEventsMax events scanned. next is the revision to go on from.
func (h *Hub) catchUp(w *watcher) (evs []*mvccpb.Event, next int64, err error) {
	revs, scanned, last := 0, 0, int64(0)
	next = w.minRev
	for next <= h.rev && scanned < scanEventsMax {
		batch, n, err := h.view.Events(next, readEventsMax)
		if err != nil {
			return nil, next, err
		}
		scanned += len(batch)
		for _, ev := range w.filter(batch) {
			if ev.Kv.ModRevision != last {
				if revs == batchRevsMax {
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

// compacted tells w its next revision is compacted and stops feeding it.
func (h *Hub) compacted(w *watcher) {
	h.remove(w)
	w.state = watcherCompacted
	h.push(w.s, Response{w: w, Resp: &pb.WatchResponse{WatchId: w.id, Canceled: true, CompactRevision: h.view.CompactRev(), Header: &pb.ResponseHeader{}}})
}

// desyncAll moves every synced watcher to the unsynced set, to go on after the hub's rev.
func (h *Hub) desyncAll() {
	for _, ws := range h.keyed {
		for _, w := range slices.Clone(ws) {
			w.minRev = max(w.minRev, h.rev+1)
			h.desync(w)
		}
	}
	for _, w := range slices.Clone(h.ranged) {
		w.minRev = max(w.minRev, h.rev+1)
		h.desync(w)
	}
}

// desync moves a synced watcher to the unsynced set; the caller has set its minRev to the first
// revision not queued.
func (h *Hub) desync(w *watcher) {
	h.remove(w)
	w.state = watcherUnsynced
	h.unsynced[w] = struct{}{}
}

func (h *Hub) addSynced(w *watcher) {
	w.state = watcherSynced
	if w.end != nil {
		h.ranged = insertBySeq(h.ranged, w)
		return
	}
	h.keyed[string(w.key)] = insertBySeq(h.keyed[string(w.key)], w)
}

// remove takes w out of whichever set holds it.
func (h *Hub) remove(w *watcher) {
	switch w.state {
	case watcherUnsynced:
		delete(h.unsynced, w)
	case watcherSynced:
		if w.end != nil {
			h.ranged = deleteBySeq(h.ranged, w)
			return
		}
		ws := deleteBySeq(h.keyed[string(w.key)], w)
		if len(ws) == 0 {
			delete(h.keyed, string(w.key))
		} else {
			h.keyed[string(w.key)] = ws
		}
	}
}

func bySeq(a *watcher, seq uint64) int { return cmp.Compare(a.seq, seq) }

// insertBySeq inserts w in ws, sorted by seq.
func insertBySeq(ws []*watcher, w *watcher) []*watcher {
	i, found := slices.BinarySearchFunc(ws, w.seq, bySeq)
	if found {
		panic(fmt.Sprintf("watch: watcher %d (seq %d) is already synced", w.id, w.seq))
	}
	return slices.Insert(ws, i, w)
}

// deleteBySeq removes w from ws, sorted by seq.
func deleteBySeq(ws []*watcher, w *watcher) []*watcher {
	i, found := slices.BinarySearchFunc(ws, w.seq, bySeq)
	if !found || ws[i] != w {
		panic(fmt.Sprintf("watch: synced watcher %d (seq %d) is not in its list", w.id, w.seq))
	}
	return slices.Delete(ws, i, i+1)
}

// Create registers a watch on s, queueing its created response (or the refusal) before any of
// its events, as etcd does. A watcher with a past start revision waits for Sync.
func (h *Hub) Create(s *Stream, r *pb.WatchCreateRequest) {
	refuse := func(reason string) { h.Refuse(s, reason) }
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
			refuse(ErrRangeEmpty.Error())
			return
		}
	}
	id := r.WatchId
	if id != 0 {
		if _, dup := s.watchers[id]; dup {
			refuse(ErrDuplicateID.Error())
			return
		}
	} else {
		for s.watchers[s.nextID] != nil {
			s.nextID++
		}
		id = s.nextID
		s.nextID++
	}
	w := &watcher{s: s, seq: h.nextSeq, id: id, key: key, end: end, startRev: r.StartRevision,
		prevKV: r.PrevKv, fragment: r.Fragment, progressNotify: r.ProgressNotify, quiet: true}
	h.nextSeq++
	for _, f := range r.Filters {
		switch f {
		case pb.WatchCreateRequest_NOPUT:
			w.noPut = true
		case pb.WatchCreateRequest_NODELETE:
			w.noDelete = true
		}
	}
	s.watchers[id] = w
	h.push(s, Response{Resp: &pb.WatchResponse{WatchId: id, Created: true, Header: &pb.ResponseHeader{Revision: h.rev}}})
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
}

// Refuse answers a create request on s that the host refuses for reason (permission denied,
// say) as Create answers the ones it refuses: created and canceled at once, with watch ID -1,
// queued in order behind what s already has queued.
func (h *Hub) Refuse(s *Stream, reason string) {
	h.push(s, Response{Resp: &pb.WatchResponse{WatchId: -1, Created: true, Canceled: true, CancelReason: reason,
		Header: &pb.ResponseHeader{Revision: h.rev}}})
}

// Cancel cancels watch id of s; an unknown ID gets no answer (false).
func (h *Hub) Cancel(s *Stream, id int64) bool {
	w, ok := s.watchers[id]
	if !ok {
		return false
	}
	h.remove(w)
	w.state = watcherCanceled
	delete(s.watchers, id)
	h.push(s, Response{Resp: &pb.WatchResponse{WatchId: id, Canceled: true, Header: &pb.ResponseHeader{Revision: h.rev}}})
	return true
}

// Progress answers a progress request on s: if every watcher of s is synced, one response
// with watch_id -1 and the hub's revision, as etcd's progressIfSync; it promises that every
// event at or below that revision was queued before it. It reports whether it answered.
func (h *Hub) Progress(s *Stream) bool {
	if len(s.watchers) == 0 {
		return false
	}
	for _, w := range s.watchers {
		if w.state != watcherSynced || h.rev < w.startRev {
			return false
		}
	}
	h.push(s, Response{Resp: &pb.WatchResponse{WatchId: -1, Header: &pb.ResponseHeader{Revision: h.rev}}})
	return true
}

// ProgressTick sends the periodic progress notifications of s, at the host's progress
// interval: to each progress_notify watcher that is synced, has room in its queue and had no
// events sent since the last tick.
func (h *Hub) ProgressTick(s *Stream) {
	ids := make([]int64, 0, len(s.watchers))
	for id := range s.watchers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		w := s.watchers[id]
		if !w.progressNotify {
			continue
		}
		wasQuiet := w.quiet
		w.quiet = true
		if !wasQuiet || w.state != watcherSynced || h.rev < w.startRev || w.queued >= QueuedResponsesMax {
			continue
		}
		h.push(s, Response{w: w, Resp: &pb.WatchResponse{WatchId: w.id, Header: &pb.ResponseHeader{Revision: h.rev}}})
	}
}

// Close removes every watcher of s. Responses already taken may still be reported Sent.
func (h *Hub) Close(s *Stream) {
	for id, w := range s.watchers {
		h.remove(w)
		w.state = watcherCanceled
		delete(s.watchers, id)
	}
	s.queue = nil
}

// WithPrevKV returns r with its events copied (they are shared with other watchers) and each
// given the key's previous version, read from v at mod_revision-1 as etcd reads it when
// sending: none for a creation, and none once that revision is compacted.
func WithPrevKV(v *mvcc.View, r *pb.WatchResponse) *pb.WatchResponse {
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
