package sim

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/basaltdb/basalt/diskio"
	"github.com/basaltdb/basalt/engine"
	"github.com/basaltdb/basalt/engine/mvcc"
	"github.com/basaltdb/basalt/raftlog"
)

// memberDir is where a member keeps its raft log on its disk.
const memberDir = "member"

// errNotReady answers a serializable read a member cannot serve yet.
var errNotReady = errors.New("sim: member has no read view yet")

// member hosts one engine.Node the way server/loop.go does: it persists
// each Ready with raftlog (fsync when it must) before acting on it, sends
// its messages through the simulated network, publishes the read view and
// answers the clients. It also carries the faults that are the host's:
// crashes, pauses, disk latency, and the planted host bugs.
type member struct {
	w   *World
	idx int
	id  uint64

	disk *diskio.Sim
	inj  *diskInjector
	log  *raftlog.Log
	node *engine.Node
	view *mvcc.View

	// up is set while the process runs. failed is set once its disk was
	// found corrupt: it never runs again.
	up, failed bool
	// incarnation counts starts; an event of an earlier one is stale.
	incarnation uint64
	pausedUntil time.Duration
	// held are the events that reached the member while it was paused, in
	// order; they run when it resumes.
	held []func()
	// ioBusy is set while ioRd, persisted, waits for its I/O to complete;
	// no other Ready is taken until then. ioSeq names the completion
	// event that is due, so that a rescheduled one supersedes it.
	ioBusy bool
	ioRd   engine.Ready
	ioSeq  uint64
	// afterIO are calls into the node that must wait for the Ready in
	// flight: a finished snapshot job, whose SnapshotDone must not fall
	// between the ApplySnapshot of a snapshot from the leader and the
	// Advance that installs it (the server's loop never separates them).
	afterIO []func()
	// tickEvery is the member's tick interval, drift included.
	tickEvery time.Duration
	crashRNG  rng

	// calls are the client attempts waiting for the engine, by request ID.
	calls map[engine.ID]*attempt

	// hsTerm and hsVote are the term and vote of the last Ready that
	// carried a hard state, for the crash site.
	hsTerm, hsVote uint64

	// Checker state.
	// checked is the last index compared with the committed-log oracle.
	checked uint64
	// durableCommit is the commit index of the last persisted hard state.
	durableCommit uint64
	// promised is the durable state the member has acted on: it must
	// survive a crash.
	promised promise
	// savedUnacted is set while a Save has not been acted on yet.
	savedUnacted bool
	lastHash     time.Duration
}

// promise is what a member has told others or its clients it holds: the
// hard state and the log it persisted before acting on a Ready.
type promise struct {
	term, vote     uint64
	last, lastTerm uint64
}

// newMember makes member idx; g draws its clock drift.
func newMember(w *World, idx int, g rng) *member {
	m := &member{
		w:        w,
		idx:      idx,
		id:       uint64(idx + 1),
		disk:     diskio.NewSim(),
		crashRNG: newRNG(w.opts.Seed, streamCrash+Stream(idx)),
		calls:    map[engine.ID]*attempt{},
	}
	m.inj = newDiskInjector(w, idx)
	m.disk.SetInjector(m.inj)
	drift := g.between(-int64(w.opts.Faults.DriftPPM), int64(w.opts.Faults.DriftPPM))
	m.tickEvery = tickInterval + tickInterval*time.Duration(drift)/ppmMax
	return m
}

// paused reports whether the process is frozen now.
func (m *member) paused() bool { return m.pausedUntil > m.w.now }

// boot starts the member for the first time and its tick chain.
func (m *member) boot() {
	m.restart()
	phase := m.w.fault.dur(0, tickInterval)
	m.w.after(phase, evTick, m.idx, m.tick)
}

func (m *member) logOptions() raftlog.Options {
	o := raftlog.Options{
		SegmentBytes:    m.w.opts.Disk.SegmentBytes,
		EntryCacheBytes: m.w.opts.Disk.EntryCacheBytes,
		SkipCRC:         m.w.opts.Bugs.SkipCRC,
	}
	if m.inj.faulty && m.w.opts.Disk.RotPPM > 0 {
		// A rotting disk is read: raft reads its entries back from the WAL
		// to apply and to send them.
		o.EntryCacheBytes = 1
	}
	return o
}

// restart opens the member's log on its disk, checks that what it had
// promised survived, and starts its engine.
func (m *member) restart() {
	if m.up || m.failed {
		return
	}
	m.guard(func() {
		m.inj.opening = true
		log, err := raftlog.Open(m.disk, memberDir, m.logOptions())
		m.inj.opening = false
		m.disk.TakeLatency()
		if err != nil {
			m.startFailed("opening the raft log", err)
			return
		}
		hs, _, err := log.InitialState()
		if err != nil {
			m.startFailed("reading the raft log", err)
			return
		}
		if !m.checkPromise(log, hs) {
			return
		}
		peers, join := m.w.ops.bootstrap(m)
		es := streamSeed(m.w.opts.Seed, streamEngine+Stream(m.idx))
		node, err := engine.NewNode(engine.Config{
			ID:                  m.id,
			Log:                 log,
			Bootstrap:           peers,
			Join:                join,
			ElectionTicks:       electionTicks,
			HeartbeatTicks:      heartbeatTicks,
			RequestTimeoutTicks: requestTimeoutTicks,
			RequestBytesMax:     requestBytesMax,
			SnapshotEntries:     m.w.opts.Disk.SnapshotEntries,
			Rand:                rand.New(rand.NewPCG(es, m.incarnation)),
			Bugs: engine.Bugs{
				ReadWithoutReadIndex: m.w.opts.Bugs.ReadWithoutReadIndex,
				ApplyUncommitted:     m.w.opts.Bugs.ApplyUncommitted,
			},
		})
		if err != nil {
			m.startFailed("starting the engine", err)
			return
		}
		m.log, m.node, m.view = log, node, nil
		m.up, m.ioBusy = true, false
		m.checked = 0
		m.durableCommit = hs.GetCommit()
		m.hsTerm, m.hsVote = hs.GetTerm(), hs.GetVote()
		m.w.mix(uint64(evRestart), m.id, hs.GetTerm(), hs.GetCommit())
		m.kick()
	})
}

// checkPromise checks that the reopened log holds what the member had
// acted on before it crashed.
func (m *member) checkPromise(log *raftlog.Log, hs *raftpb.HardState) bool {
	p := m.promised
	switch {
	case hs.GetTerm() < p.term:
		m.w.fail("durability", fmt.Sprintf("member %d restarted at term %d after acting at term %d", m.id, hs.GetTerm(), p.term))
		return false
	case hs.GetTerm() == p.term && p.vote != 0 && hs.GetVote() != p.vote:
		m.w.fail("durability", fmt.Sprintf("member %d restarted with vote %d in term %d after voting %d", m.id, hs.GetVote(), p.term, p.vote))
		return false
	}
	if m.savedUnacted || p.last == 0 {
		// A Save after the promise may have replaced its suffix durably.
		return true
	}
	last, err := log.LastIndex()
	if err != nil {
		m.startFailed("reading the raft log", err)
		return false
	}
	term, err := log.Term(p.last)
	if errors.Is(err, raft.ErrCompacted) {
		// A snapshot covering the entries was made the log's base.
		return true
	}
	if last < p.last || err != nil || term != p.lastTerm {
		m.w.fail("durability", fmt.Sprintf("member %d restarted with last index %d (term at %d: %d, %v) after acting on entries up to %d of term %d",
			m.id, last, p.last, term, err, p.last, p.lastTerm))
		return false
	}
	return true
}

// startFailed handles a restart that could not complete.
func (m *member) startFailed(what string, err error) {
	if m.corruption(err) {
		m.failPermanently()
		return
	}
	if errors.Is(err, diskio.ErrInjected) {
		// The process dies: its open files and lock go with it.
		m.disk = m.disk.Crash(m.crashRNG.r)
		m.disk.SetInjector(m.inj)
		m.scheduleRestart()
		return
	}
	m.w.fail("restart", fmt.Sprintf("member %d: %s: %v", m.id, what, err))
}

// corruption reports whether err is damage to the member's durable state
// that the simulator put there (a bit flipped on a faulty disk).
func (m *member) corruption(err error) bool {
	return m.inj.flips > 0 && errors.Is(err, raftlog.ErrCorrupt)
}

// failPermanently stops a member whose disk is known to be corrupt: it is
// never restarted (an operator would replace it).
func (m *member) failPermanently() {
	m.w.mix(uint64(evRestart), m.id, 0xdead)
	m.w.disturb(m.w.now, math.MaxInt64)
	m.stop()
	m.failed = true
	m.w.stats.Corrupted++
}

// guard runs fn and turns a panic into what it means: the fail-stop of a
// member whose disk failed or rotted (raft panics on a storage error), or
// a bug, reported with its stack.
func (m *member) guard(fn func()) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		err, _ := r.(error)
		msg := fmt.Sprint(r)
		switch {
		case m.inj.flips > 0 && (errors.Is(err, raftlog.ErrCorrupt) || strings.Contains(msg, raftlog.ErrCorrupt.Error())):
			m.failPermanently()
		case errors.Is(err, diskio.ErrInjected) || strings.Contains(msg, diskio.ErrInjected.Error()):
			m.crash("disk error")
		default:
			m.w.fail("panic", fmt.Sprintf("member %d panicked: %v\n%s", m.id, r, debug.Stack()))
		}
	}()
	fn()
}

// failStop stops the member after a failed persist: an fsync is never
// retried, the process must restart from what is durable.
func (m *member) failStop(err error) {
	switch {
	case m.corruption(err):
		m.failPermanently()
	case errors.Is(err, diskio.ErrInjected):
		m.crash("disk error")
	default:
		m.w.fail("member error", fmt.Sprintf("member %d: %v", m.id, err))
	}
}

// stop kills the process: unsynced data is lost or torn by the disk's
// crash model, in-flight requests are never answered.
func (m *member) stop() {
	if !m.up {
		return
	}
	m.savedUnacted = m.ioBusy
	m.incarnation++
	m.up, m.ioBusy, m.ioRd, m.pausedUntil, m.held, m.afterIO = false, false, engine.Ready{}, 0, nil, nil
	m.disk = m.disk.Crash(m.crashRNG.r)
	m.disk.SetInjector(m.inj)
	m.log, m.node, m.view = nil, nil, nil
	clear(m.calls)
}

// crash kills the member and schedules its restart.
func (m *member) crash(why string) {
	if !m.up {
		return
	}
	m.w.stats.Crashes++
	m.w.mix(uint64(evRestart), m.id, uint64(len(why)))
	m.stop()
	switch {
	case m.w.phase == phaseSafety:
		m.scheduleRestart()
	case m.w.live != nil && m.w.live.core[m.idx]:
		m.scheduleRestart()
	}
}

// scheduleRestart restarts the member after a drawn delay; the cluster is
// disturbed meanwhile.
func (m *member) scheduleRestart() {
	d := m.w.restartDelay()
	m.w.disturb(m.w.now, m.w.now+d)
	m.w.after(d, evRestart, m.idx, m.restart)
}

// pause freezes the process for d: it neither ticks nor handles messages,
// which wait for it.
func (m *member) pause(d time.Duration) {
	m.w.stats.Pauses++
	until := m.w.now + d
	m.w.disturb(m.w.now, until)
	m.pausedUntil = until
	inc := m.incarnation
	m.w.at(until, evUnpause, m.idx, func() {
		if m.incarnation == inc && m.up && m.pausedUntil == until {
			m.resume()
		}
	})
}

// hold keeps an event that reached the paused member for its resumption.
func (m *member) hold(fn func()) { m.held = append(m.held, fn) }

// resume ends a pause: the held events run in the order they came.
func (m *member) resume() {
	m.pausedUntil = 0
	held := m.held
	m.held = nil
	for _, fn := range held {
		fn()
	}
	if m.up {
		m.guard(m.kick)
	}
}

// tick is the member's clock; the chain runs whether the process is up or
// not, as a timer would.
func (m *member) tick() {
	if m.up && !m.paused() {
		m.guard(func() {
			m.node.Tick()
			m.kick()
		})
	}
	m.w.after(m.tickEvery, evTick, m.idx, m.tick)
}

// deliver hands the member a message from a peer; a MsgSnap comes with
// its body, which the transport writes into the log before the message is
// stepped, and whose fate it reports to the sender.
func (m *member) deliver(from *member, fromInc uint64, msg *raftpb.Message, body []byte) {
	snap := msg.GetType() == raftpb.MsgSnap
	if !m.up {
		if snap {
			from.snapshotReport(m.id, fromInc, false)
		}
		return
	}
	if m.paused() {
		m.hold(func() { m.deliver(from, fromInc, msg, body) })
		return
	}
	if m.w.ops.rejects(m, from, fromInc) {
		return
	}
	m.guard(func() {
		if snap {
			err := m.log.ReceiveSnapshot(msg.GetSnapshot(), bytes.NewReader(body))
			m.disk.TakeLatency()
			from.snapshotReport(m.id, fromInc, err == nil)
			if err != nil {
				if errors.Is(err, diskio.ErrInjected) || m.corruption(err) {
					m.failStop(err)
				} else if !errors.Is(err, raftlog.ErrSnapshotInvalid) {
					m.w.fail("snapshot", fmt.Sprintf("member %d cannot receive snapshot %d/%d from member %d: %v",
						m.id, msg.GetSnapshot().GetMetadata().GetIndex(), msg.GetSnapshot().GetMetadata().GetTerm(), from.id, err))
				}
				return
			}
		}
		_ = m.node.Step(msg)
		m.kick()
	})
}

// kick does every Ready the node has, as the server's loop does, until it
// must wait for I/O.
func (m *member) kick() {
	for m.up && !m.paused() && !m.ioBusy && m.node.HasReady() {
		rd := m.node.Ready()
		sync := rd.MustSync
		bugs := m.w.opts.Bugs
		if bugs.SkipHardStateSync && len(rd.Entries) == 0 {
			sync = false
		}
		deferSync := bugs.AckBeforeFsync && sync
		if deferSync {
			sync = false
		}
		if rd.Snapshot != nil {
			if err := m.log.ApplySnapshot(rd.Snapshot.GetMetadata()); err != nil {
				m.failStop(err)
				return
			}
			m.w.stats.Installed++
		}
		if err := m.log.Save(rd.HardState, rd.Entries, sync); err != nil {
			m.failStop(err)
			return
		}
		if rd.HardState != nil {
			m.durableCommit = rd.HardState.GetCommit()
		}
		m.savedUnacted = true
		lat := m.disk.TakeLatency()
		if deferSync {
			m.deferSync(lat)
			lat = 0
		}
		if lat == 0 {
			m.complete(rd)
			continue
		}
		m.ioBusy, m.ioRd = true, rd
		m.scheduleIODone(lat)
		return
	}
}

// scheduleIODone schedules the completion of the pending I/O after lat,
// superseding any completion scheduled before.
func (m *member) scheduleIODone(lat time.Duration) {
	m.ioSeq++
	seq := m.ioSeq
	m.w.after(lat, evIODone, m.idx, func() {
		if m.up && m.ioBusy && m.ioSeq == seq {
			if m.paused() {
				m.hold(func() { m.ioDone(seq) })
				return
			}
			m.ioDone(seq)
		}
	})
}

func (m *member) ioDone(seq uint64) {
	if !m.up || !m.ioBusy || m.ioSeq != seq {
		return
	}
	m.guard(func() {
		rd := m.ioRd
		m.ioBusy, m.ioRd = false, engine.Ready{}
		m.complete(rd)
		after := m.afterIO
		m.afterIO = nil
		for _, fn := range after {
			if m.up {
				fn()
			}
		}
		if m.up {
			m.kick()
		}
	})
}

// deferSync is the planted ack-before-fsync bug: the fsync the Ready
// needed comes after the member has acted on it.
func (m *member) deferSync(lat time.Duration) {
	inc := m.incarnation
	m.w.after(lat+m.inj.syncLatency(), evDeferredSync, m.idx, func() {
		if m.incarnation != inc || !m.up {
			return
		}
		m.guard(func() {
			if err := m.log.Save(nil, nil, true); err != nil {
				m.failStop(err)
			}
			m.disk.TakeLatency()
		})
	})
}

// complete acts on a persisted Ready: it sends the messages, advances the
// node, publishes the view and answers the clients.
func (m *member) complete(rd engine.Ready) {
	m.savedUnacted = false
	if rd.HardState != nil || len(rd.Entries) > 0 {
		m.recordPromise()
	}
	for _, msg := range rd.Messages {
		if msg.GetType() == raftpb.MsgSnap {
			if m.sendSnapshot(msg); !m.up {
				return
			}
			continue
		}
		m.w.net.send(m.idx, msg, nil)
	}
	out := m.node.Advance(rd)
	if out.Err != nil {
		m.failStop(out.Err)
		return
	}
	if out.View != nil {
		m.view = out.View
	}
	if out.Snapshot != nil {
		m.writeSnapshot(out.Snapshot)
		if !m.up {
			return
		}
	}
	m.w.chk.afterAdvance(m)
	if m.w.failure != nil || !m.up {
		return
	}
	if out.View != nil {
		m.w.watch.published(m)
	}
	for _, r := range out.Responses {
		m.answered(r)
	}
	if m.w.ops.afterAdvance(m); !m.up || m.w.failure != nil {
		return
	}
	if hs := rd.HardState; hs != nil {
		changed := hs.GetTerm() != m.hsTerm || hs.GetVote() != m.hsVote
		m.hsTerm, m.hsVote = hs.GetTerm(), hs.GetVote()
		if changed && m.w.phase == phaseSafety && m.w.fault.chance(m.w.opts.Faults.CrashSitePPM) {
			m.crash("crash site")
		}
	}
}

// sendSnapshot sends a MsgSnap with its body, read from the log now, as a
// peer transport streams it; a body it cannot read is reported failed.
func (m *member) sendSnapshot(msg *raftpb.Message) {
	meta, body, err := m.log.OpenSnapshot()
	var data []byte
	if err == nil {
		data, err = io.ReadAll(body)
		body.Close()
	}
	m.disk.TakeLatency()
	if err == nil && (meta.GetIndex() != msg.GetSnapshot().GetMetadata().GetIndex() || meta.GetTerm() != msg.GetSnapshot().GetMetadata().GetTerm()) {
		err = raftlog.ErrSnapshotInvalid
	}
	if err != nil {
		if errors.Is(err, diskio.ErrInjected) || m.corruption(err) {
			m.failStop(err)
			return
		}
		m.node.ReportSnapshot(msg.GetTo(), false)
		return
	}
	m.w.net.send(m.idx, msg, data)
}

// snapshotReport tells the sender of a MsgSnap whether it was delivered,
// one link delay later, if the sender still runs the incarnation that sent
// it.
func (m *member) snapshotReport(to uint64, inc uint64, delivered bool) {
	m.w.after(m.w.net.delay(), evSnapshot, m.idx, func() {
		if !m.up || m.incarnation != inc {
			return
		}
		if m.paused() {
			m.hold(func() { m.snapshotReport(to, inc, delivered) })
			return
		}
		m.w.mix(uint64(evSnapshot), m.id, to, boolWord(delivered))
		m.guard(func() {
			m.node.ReportSnapshot(to, delivered)
			m.kick()
		})
	})
}

// writeSnapshot writes a snapshot job: the body now (the job holds an
// immutable view), and, once the writes' latency has passed, tells the
// node, which may make it the log's base. A failed write or fsync stops the
// member, as it stops the server.
func (m *member) writeSnapshot(job *engine.SnapshotJob) {
	w, err := m.log.CreateSnapshot(job.Meta)
	if err == nil {
		if err = engine.WriteSnapshot(w, job); err == nil {
			err = w.Commit()
		} else {
			err = errors.Join(err, w.Abort())
		}
	}
	lat := m.disk.TakeLatency()
	if err != nil {
		m.failStop(err)
		return
	}
	m.w.stats.Snapshots++
	inc := m.incarnation
	m.w.after(lat, evSnapshot, m.idx, func() {
		if !m.up || m.incarnation != inc {
			return
		}
		if m.paused() {
			m.hold(func() { m.snapshotDone(inc, job) })
			return
		}
		m.snapshotDone(inc, job)
	})
}

func (m *member) snapshotDone(inc uint64, job *engine.SnapshotJob) {
	if !m.up || m.incarnation != inc {
		return
	}
	if m.ioBusy {
		m.afterIO = append(m.afterIO, func() { m.snapshotDone(inc, job) })
		return
	}
	m.guard(func() {
		if m.node.SnapshotDone(job, nil) {
			if err := m.log.SnapshotSaved(job.Meta); err != nil {
				m.failStop(err)
				return
			}
			m.disk.TakeLatency()
		}
		m.kick()
	})
}

// recordPromise notes the durable state the member is about to act on.
func (m *member) recordPromise() {
	hs, _, err := m.log.InitialState()
	if err != nil {
		return
	}
	last, _ := m.log.LastIndex()
	term, _ := m.log.Term(last)
	m.promised = promise{term: hs.GetTerm(), vote: hs.GetVote(), last: last, lastTerm: term}
}

// request is a client attempt arriving at the member.
func (m *member) request(a *attempt) {
	if !m.up {
		return
	}
	if m.paused() {
		m.hold(func() { m.request(a) })
		return
	}
	m.guard(func() {
		if m.w.ops.refusesRequest(m, a) {
			return
		}
		op := a.op
		var r engine.Request
		switch {
		case op.read != nil && op.serializable:
			m.serveRead(a)
			return
		case op.read != nil, op.write == nil:
			// A linearizable read, keepalive or TTL waits for a read barrier,
			// which confirms the leadership a keepalive needs (etcd's
			// ensureLeadership) as the server's does.
		default:
			w := op.write
			r.Op = &pb.InternalRaftRequest{Put: w.Put, DeleteRange: w.DeleteRange, Txn: w.Txn, Compaction: w.Compaction,
				LeaseGrant: w.LeaseGrant, LeaseRevoke: w.LeaseRevoke}
		}
		id, err := m.node.Submit(r)
		if err != nil {
			m.w.work.reply(a, nil, err, 0)
			return
		}
		a.id = id
		m.calls[id] = a
		m.kick()
	})
}

// answered routes an engine response to its client attempt.
func (m *member) answered(r engine.Response) {
	a := m.calls[r.ID]
	if a == nil {
		m.w.ops.answered(m, r)
		return
	}
	delete(m.calls, r.ID)
	switch {
	case a.op.read != nil && r.Err == nil:
		m.serveRead(a)
		return
	case a.op.write == nil && r.Err == nil:
		m.serveLease(a)
		return
	}
	m.w.work.reply(a, r.Result, r.Err, 0)
}

// serveLease serves a keepalive or a TTL after its read barrier, from
// the leader's memory, as the server does; any other member answers
// engine.ErrNotLeader.
func (m *member) serveLease(a *attempt) {
	if m.view == nil {
		m.w.work.reply(a, nil, errNotReady, 0)
		return
	}
	o := a.op
	rev := m.view.Rev()
	hdr := &pb.ResponseHeader{Revision: rev}
	if o.lease == leaseKeepAlive {
		var ttl int64
		var err error
		if m.w.opts.Bugs.KeepAliveWithoutRenew {
			var st engine.LeaseStatus
			st, err = m.node.LeaseTimeToLive(o.leaseID, false)
			ttl = st.GrantedTTL
		} else {
			ttl, err = m.node.Renew(o.leaseID)
		}
		if err == nil {
			m.w.chk.renewed(o.leaseID)
		}
		m.w.work.reply(a, &pb.LeaseKeepAliveResponse{Header: hdr, ID: o.leaseID, TTL: ttl}, err, rev)
		return
	}
	st, err := m.node.LeaseTimeToLive(o.leaseID, o.withKeys)
	resp := &pb.LeaseTimeToLiveResponse{Header: hdr, ID: o.leaseID, TTL: st.TTL, GrantedTTL: st.GrantedTTL, Keys: st.Keys}
	if errors.Is(err, engine.ErrLeaseNotFound) {
		// The server answers TTL -1, not an error, as etcd does.
		resp, err = &pb.LeaseTimeToLiveResponse{Header: hdr, ID: o.leaseID, TTL: -1}, nil
	}
	m.w.work.reply(a, resp, err, rev)
}

// serveRead serves a read from the newest published view, as the server
// does after the read barrier.
func (m *member) serveRead(a *attempt) {
	if m.view == nil {
		m.w.work.reply(a, nil, errNotReady, 0)
		return
	}
	resp, err := engine.Range(m.view, a.op.read)
	m.w.work.reply(a, resp, err, m.view.Rev())
}
