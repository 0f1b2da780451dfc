package sim

import (
	"bytes"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/engine/watch"
)

// Limits of the simulated watchers.
const (
	// watchTickInterval is how often the watch clients act: create, drain, cancel, ask for
	// progress; each member's hub also syncs its unsynced watchers then, as the server's hub
	// goroutine does on its timer.
	watchTickInterval = 20 * time.Millisecond
	// watchersMax bounds the watchers alive at once; watchersCreatedMax those of a run.
	watchersMax        = 6
	watchersCreatedMax = 60
	// watchTakeResponsesMax bounds the responses a client takes off its stream at once.
	watchTakeResponsesMax = 64
	// watchFinalPassesMax bounds the passes that drain the watchers at the end of the run.
	watchFinalPassesMax = 10_000
)

// watchSim runs simulated watch clients: each watcher lives on one stream of one member's
// engine/watch hub, which the member feeds with its views as it applies. The checker follows
// every watcher against the committed history: what it gets is exactly the events it asked
// for, in order, each revision whole, with the right prev_kv, and what a progress
// notification or a compaction cancel claims is true. A member's watchers die with it; their
// clients re-create them elsewhere from the revision after the last they saw, as clientv3
// does, and the checker follows the continuation.
type watchSim struct {
	w   *World
	rng rng
	// hubs[i] is member i's hub, made at the first view of each incarnation.
	hubs []*memberHub
	// watchers lists every watcher of the run, in creation order.
	watchers []*simWatcher
	created  int
	// revs[r] holds the events of revision r of the committed history, in order, for r in
	// [2, built]; built from the checker's model as the committed log grows.
	revs  [][]wantEvent
	built int64
}

// memberHub is the hub of one incarnation of a member.
type memberHub struct {
	hub *watch.Hub
	inc uint64
}

// wantEvent is one event of the committed history, with the previous version of its key.
type wantEvent struct {
	ev   *mvccpb.Event
	prev *mvccpb.KeyValue
}

// simWatcher is one client watch, across the streams it is re-created on.
type simWatcher struct {
	idx int
	// key and end are the request's: end nil watches key alone, end {0} every key >= key.
	key, end                []byte
	noPut, noDelete, prevKV bool
	progressNotify, slow    bool
	member                  int
	inc                     uint64
	stream                  *watch.Stream
	startReq                int64
	created, everCreated    bool
	canceling, ended        bool
	// next is the first revision whose events the checker has not seen proven delivered:
	// every wanted event below it arrived (or a progress notification vouched there was
	// none). 0 until the first created response of a watcher started at 0.
	next int64
	// resume is where clientv3 would re-create the watch: after the last event, or after the
	// created response's revision for a watcher started at 0.
	resume int64
	// pos is the first revision the current stream has not delivered events for: the hub's
	// position for the watcher is at least pos.
	pos int64
	// compactedStart is the compaction revision of the view the watch was created on when its
	// start lies below it: the next response must be the compaction cancel.
	compactedStart int64
	events         int
}

func newWatchSim(w *World) *watchSim {
	return &watchSim{w: w, rng: newRNG(w.opts.Seed, streamWatch), hubs: make([]*memberHub, len(w.members)),
		revs: make([][]wantEvent, 2), built: 1}
}

func (ws *watchSim) start() {
	ws.w.after(watchTickInterval, evWatch, -1, ws.tick)
}

// published hands member m's new view to its hub, making the hub at the first view of an
// incarnation.
func (ws *watchSim) published(m *member) {
	for len(ws.hubs) <= m.idx {
		// A member the operator added.
		ws.hubs = append(ws.hubs, nil)
	}
	mh := ws.hubs[m.idx]
	if mh == nil || mh.inc != m.incarnation {
		ws.hubs[m.idx] = &memberHub{hub: watch.New(nil, m.view), inc: m.incarnation}
		return
	}
	mh.hub.Publish(m.view)
	mh.hub.Sync()
}

// hubOf returns the live hub of member i, or nil.
func (ws *watchSim) hubOf(i int) *watch.Hub {
	m := ws.w.members[i]
	if i >= len(ws.hubs) {
		return nil
	}
	mh := ws.hubs[i]
	if !m.up || mh == nil || mh.inc != m.incarnation {
		return nil
	}
	return mh.hub
}

func (ws *watchSim) tick() {
	w := ws.w
	if w.phase == phaseDone || w.failure != nil {
		return
	}
	for i := range w.members {
		if h := ws.hubOf(i); h != nil && !w.members[i].paused() {
			h.Sync()
			h.Woken()
		}
	}
	alive := 0
	for _, sw := range ws.watchers {
		if !sw.ended {
			alive++
		}
	}
	if w.phase == phaseSafety && alive < watchersMax && ws.created < watchersCreatedMax && ws.rng.intN(10) == 0 {
		ws.create()
	}
	for _, sw := range ws.watchers {
		if sw.ended {
			continue
		}
		ws.step(sw)
		if w.failure != nil {
			return
		}
	}
	w.after(watchTickInterval, evWatch, -1, ws.tick)
}

// create starts a new watcher on a member with a hub.
func (ws *watchSim) create() {
	wl := ws.w.work
	sw := &simWatcher{idx: len(ws.watchers)}
	nkeys := uint64(wl.o.Keys)
	switch ws.rng.intN(3) {
	case 0:
		sw.key = []byte(wl.key(ws.rng.intN(nkeys)))
	case 1:
		lo := ws.rng.intN(nkeys)
		hi := lo + 1 + ws.rng.intN(rangeKeysMax)
		sw.key, sw.end = []byte(wl.key(lo)), []byte(wl.key(hi))
		if hi >= nkeys {
			sw.end = []byte{0} // wl.key(hi) need not sort after the key space
		}
	default:
		sw.key, sw.end = []byte(wl.key(ws.rng.intN(nkeys))), []byte{0}
	}
	sw.noPut = ws.rng.intN(6) == 0
	sw.noDelete = !sw.noPut && ws.rng.intN(6) == 0
	sw.prevKV = ws.rng.intN(3) == 0
	sw.progressNotify = ws.rng.intN(3) == 0
	sw.slow = ws.rng.intN(4) == 0
	i, h := ws.pickMember()
	if h == nil {
		return
	}
	switch ws.rng.intN(4) {
	case 0, 1:
	case 2:
		sw.startReq = ws.rng.between(1, max(h.Rev(), 1))
	default:
		sw.startReq = h.Rev() + ws.rng.between(1, 3)
	}
	ws.created++
	ws.watchers = append(ws.watchers, sw)
	ws.open(sw, i, h)
}

// pickMember draws a member with a live hub that is not paused.
func (ws *watchSim) pickMember() (int, *watch.Hub) {
	var cands []int
	for i, m := range ws.w.members {
		if ws.hubOf(i) != nil && !m.paused() {
			cands = append(cands, i)
		}
	}
	if len(cands) == 0 {
		return -1, nil
	}
	i := cands[ws.rng.intN(uint64(len(cands)))]
	return i, ws.hubOf(i)
}

// open creates sw's watch on member i's hub from sw.startReq.
func (ws *watchSim) open(sw *simWatcher, i int, h *watch.Hub) {
	sw.member, sw.inc, sw.stream = i, ws.hubs[i].inc, h.NewStream()
	sw.created = false
	sw.pos = sw.startReq
	sw.compactedStart = 0
	if v := ws.w.members[i].view; sw.startReq > 0 && sw.startReq < v.CompactRev() {
		sw.compactedStart = v.CompactRev()
	}
	req := &pb.WatchCreateRequest{Key: sw.key, RangeEnd: sw.end, StartRevision: sw.startReq,
		PrevKv: sw.prevKV, ProgressNotify: sw.progressNotify}
	if sw.noPut {
		req.Filters = append(req.Filters, pb.WatchCreateRequest_NOPUT)
	}
	if sw.noDelete {
		req.Filters = append(req.Filters, pb.WatchCreateRequest_NODELETE)
	}
	h.Create(sw.stream, req)
	ws.w.mix(uint64(evWatch), uint64(sw.idx), uint64(i), uint64(sw.startReq))
}

// step is one turn of sw's client: re-create a watch whose member died, drain its stream,
// sometimes ask for progress or cancel.
func (ws *watchSim) step(sw *simWatcher) {
	h := ws.hubOf(sw.member)
	if h == nil || ws.hubs[sw.member].inc != sw.inc {
		// The stream died with its member.
		sw.stream = nil
		if sw.canceling {
			sw.ended = true
			return
		}
		i, nh := ws.pickMember()
		if nh == nil {
			return
		}
		if sw.everCreated {
			sw.startReq = sw.resume
		}
		ws.open(sw, i, nh)
		return
	}
	m := ws.w.members[sw.member]
	if m.paused() {
		return
	}
	take := watchTakeResponsesMax
	if sw.slow {
		// A slow client reads a little, rarely: its queue fills and the hub moves it to the
		// unsynced set, to catch up from the history.
		take = 8
	}
	if !sw.slow || ws.rng.intN(50) == 0 {
		for _, r := range h.Take(sw.stream, int(ws.rng.between(1, int64(take)))) {
			ws.check(sw, m, r)
			if ws.w.failure != nil {
				return
			}
			if h.Sent(r) {
				h.Sync()
			}
			if sw.ended {
				h.Close(sw.stream)
				return
			}
		}
	}
	switch n := ws.rng.intN(400); {
	case n < 4:
		h.Progress(sw.stream)
	case n < 12:
		h.ProgressTick(sw.stream)
	case n == 12 && ws.w.phase == phaseSafety && sw.created:
		if h.Cancel(sw.stream, 0) {
			sw.canceling = true
		}
	}
}

// history extends revs to the model's revision.
func (ws *watchSim) history() {
	md := ws.w.chk.model
	if md.rev <= ws.built {
		return
	}
	for r := ws.built + 1; r <= md.rev; r++ {
		ws.revs = append(ws.revs, nil)
	}
	type change struct {
		sub int64
		we  wantEvent
	}
	byRev := map[int64][]change{}
	for _, k := range md.keys {
		vs := md.hist[k]
		for j := len(vs) - 1; j >= 0 && vs[j].main > ws.built; j-- {
			we := wantEvent{ev: &mvccpb.Event{Type: mvccpb.Event_PUT, Kv: vs[j].kv(k)}}
			if vs[j].ver == 0 {
				we.ev = &mvccpb.Event{Type: mvccpb.Event_DELETE, Kv: &mvccpb.KeyValue{Key: []byte(k), ModRevision: vs[j].main}}
			}
			if j > 0 && vs[j-1].ver > 0 {
				we.prev = vs[j-1].kv(k)
			}
			byRev[vs[j].main] = append(byRev[vs[j].main], change{sub: vs[j].sub, we: we})
		}
	}
	for r := ws.built + 1; r <= md.rev; r++ {
		cs := byRev[r]
		for len(cs) > 0 {
			lo := 0
			for j := range cs {
				if cs[j].sub < cs[lo].sub {
					lo = j
				}
			}
			ws.revs[r] = append(ws.revs[r], cs[lo].we)
			cs = append(cs[:lo], cs[lo+1:]...)
		}
	}
	ws.built = md.rev
}

// wants reports whether sw asked for ev.
func (sw *simWatcher) wants(ev *mvccpb.Event) bool {
	k := ev.Kv.Key
	switch {
	case sw.end == nil:
		if !bytes.Equal(k, sw.key) {
			return false
		}
	case len(sw.end) == 1 && sw.end[0] == 0:
		if bytes.Compare(k, sw.key) < 0 {
			return false
		}
	case bytes.Compare(k, sw.key) < 0 || bytes.Compare(k, sw.end) >= 0:
		return false
	}
	return !(sw.noPut && ev.Type == mvccpb.Event_PUT) && !(sw.noDelete && ev.Type == mvccpb.Event_DELETE)
}

// wanted returns the events sw asked for with revisions in [lo, hi].
func (ws *watchSim) wanted(sw *simWatcher, lo, hi int64) []wantEvent {
	var out []wantEvent
	for r := max(lo, 2); r <= hi && r <= ws.built; r++ {
		for _, we := range ws.revs[r] {
			if sw.wants(we.ev) {
				out = append(out, we)
			}
		}
	}
	return out
}

func (ws *watchSim) failf(sw *simWatcher, format string, args ...any) {
	ws.w.fail("watch", fmt.Sprintf("watcher %d (key %q end %q start %d, on member %d): ", sw.idx, sw.key, sw.end, sw.startReq, sw.member+1)+
		fmt.Sprintf(format, args...))
}

// check checks one response sw took from its stream on member m, and follows it.
func (ws *watchSim) check(sw *simWatcher, m *member, q watch.Response) {
	r := q.Resp
	ws.history()
	if q.PrevKV() {
		r = watch.WithPrevKV(m.view, r)
	}
	ws.w.mix(uint64(evWatch), uint64(sw.idx), uint64(r.Header.GetRevision()), uint64(len(r.Events)))
	switch {
	case !sw.created:
		if !r.Created || r.Canceled || r.WatchId != 0 {
			ws.failf(sw, "first response is not its creation: %v", r)
			return
		}
		sw.created = true
		if !sw.everCreated {
			sw.everCreated = true
			if sw.startReq == 0 {
				sw.next, sw.resume, sw.pos = r.Header.Revision+1, r.Header.Revision+1, r.Header.Revision+1
			} else {
				sw.next, sw.resume = sw.startReq, sw.startReq
			}
		}
		return
	case r.Created:
		ws.failf(sw, "created twice: %v", r)
	case r.CompactRevision != 0:
		if sw.pos >= r.CompactRevision {
			ws.failf(sw, "canceled by compaction %d, but its stream's next revision %d is retained", r.CompactRevision, sw.pos)
			return
		}
		if c := ws.w.chk.model.compactRev; r.CompactRevision > c {
			ws.failf(sw, "canceled by compaction %d, but the cluster compacted only to %d", r.CompactRevision, c)
			return
		}
		sw.ended = true
	case r.Canceled:
		if !sw.canceling {
			ws.failf(sw, "canceled unasked: %v", r)
			return
		}
		sw.ended = true
	case sw.compactedStart != 0:
		ws.failf(sw, "its start is below the compaction revision %d, yet it got %v", sw.compactedStart, r)
	case len(r.Events) == 0:
		// A progress notification: every event at or below its revision was delivered.
		p := r.Header.Revision
		if miss := ws.wanted(sw, sw.next, p); len(miss) > 0 {
			ws.failf(sw, "progress at revision %d, but event %v at or below it was never delivered (next %d)", p, miss[0].ev, sw.next)
			return
		}
		sw.next = max(sw.next, p+1)
	default:
		ws.checkEvents(sw, m, r)
	}
}

// checkEvents checks an event response: exactly the wanted events from sw.next through the
// revision of its last event, whole revisions, in order, with prev_kv right.
func (ws *watchSim) checkEvents(sw *simWatcher, m *member, r *pb.WatchResponse) {
	last := r.Events[len(r.Events)-1].Kv.ModRevision
	if last > ws.built {
		ws.failf(sw, "event at revision %d beyond the committed history (%d)", last, ws.built)
		return
	}
	if r.Header.Revision < last {
		ws.failf(sw, "header revision %d below its last event's %d", r.Header.Revision, last)
		return
	}
	if first := r.Events[0].Kv.ModRevision; first < sw.next {
		ws.failf(sw, "event at revision %d, but every event below %d was delivered already", first, sw.next)
		return
	}
	want := ws.wanted(sw, sw.next, last)
	for i, ev := range r.Events {
		if i >= len(want) {
			ws.failf(sw, "unasked event %v (revisions %d..%d hold %d wanted events)", ev, sw.next, last, len(want))
			return
		}
		got := &mvccpb.Event{Type: ev.Type, Kv: ev.Kv}
		if !proto.Equal(got, want[i].ev) {
			ws.failf(sw, "event %d of revisions %d..%d is %v, the committed history gives %v", i, sw.next, last, got, want[i].ev)
			return
		}
		if !sw.prevKV {
			if ev.PrevKv != nil {
				ws.failf(sw, "prev_kv unasked on %v", ev)
				return
			}
			continue
		}
		switch p := want[i].prev; {
		case ev.PrevKv != nil && !proto.Equal(ev.PrevKv, p):
			ws.failf(sw, "prev_kv of %v is %v, the committed history gives %v", got, ev.PrevKv, p)
			return
		case ev.PrevKv == nil && p != nil && ev.Kv.ModRevision-1 >= m.view.CompactRev():
			ws.failf(sw, "no prev_kv on %v, the committed history gives %v (compacted to %d)", got, p, m.view.CompactRev())
			return
		}
	}
	if len(want) > len(r.Events) {
		ws.failf(sw, "missed event %v (delivered %d of the %d events of revisions %d..%d)", want[len(r.Events)].ev, len(r.Events), len(want), sw.next, last)
		return
	}
	sw.next, sw.resume, sw.pos = last+1, last+1, last+1
	sw.events += len(r.Events)
	ws.w.stats.WatchEvents += len(r.Events)
}

// final drains every watcher on the converged core and asks each stream for progress at its
// hub's revision: nothing committed may stay undelivered.
func (ws *watchSim) final() {
	for _, sw := range ws.watchers {
		if sw.ended || sw.stream == nil || !sw.created {
			continue
		}
		h := ws.hubOf(sw.member)
		if h == nil || ws.hubs[sw.member].inc != sw.inc || sw.compactedStart != 0 {
			continue
		}
		m := ws.w.members[sw.member]
		h.Publish(m.view)
		caught := false
		for range watchFinalPassesMax {
			h.Sync()
			for _, r := range h.Take(sw.stream, watchTakeResponsesMax) {
				ws.check(sw, m, r)
				if ws.w.failure != nil {
					return
				}
				h.Sent(r)
			}
			if sw.ended {
				break
			}
			if sw.stream.Queued() == 0 && h.Progress(sw.stream) {
				for _, r := range h.Take(sw.stream, sw.stream.Queued()) {
					ws.check(sw, m, r)
					h.Sent(r)
				}
				caught = true
				break
			}
		}
		switch {
		case ws.w.failure != nil || sw.ended:
		case !caught && sw.next > h.Rev():
			// A start beyond the hub's revision: progress waits for it, and nothing is due.
		case !caught:
			ws.failf(sw, "never caught up with revision %d: next %d", h.Rev(), sw.next)
		case sw.next <= h.Rev():
			ws.failf(sw, "drained at revision %d, but progress reached only %d", h.Rev(), sw.next-1)
		}
		if ws.w.failure != nil {
			return
		}
	}
}
