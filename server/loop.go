package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"

	"github.com/basaltdb/basalt/engine"
	"github.com/basaltdb/basalt/engine/mvcc"
	"github.com/basaltdb/basalt/raftlog"
)

// Limits of the loop.
const (
	// submitQueueMax bounds the requests waiting for the loop; senders
	// block beyond it, which is the server's back-pressure.
	submitQueueMax = 4096
	// submitBatchMax bounds the requests taken in one turn of the loop, so
	// ticks are never starved; they all share one Ready and one fsync.
	submitBatchMax = 1024
	// recvQueueMax bounds the peer messages waiting for the loop; a peer's
	// stream blocks beyond it. recvBatchMax bounds those taken in one turn.
	recvQueueMax = 4096
	recvBatchMax = 1024
	// reportQueueMax bounds the transport's reports waiting for the loop;
	// unreachable reports beyond it are dropped (raft learns again from the
	// next failure).
	reportQueueMax = 1024
)

// errStopped is returned to requests when the loop is gone, and by a
// snapshot being written when the loop stops.
var errStopped = errors.New("server: member stopped")

// inbound is a message from a peer for the node; a MsgSnap's body is
// already in the log.
type inbound struct {
	msg *raftpb.Message
}

// report is the transport's news about a peer: a snapshot delivered or
// not, or (snapshot false) a message that could not be sent.
type report struct {
	to        uint64
	snapshot  bool
	delivered bool
}

type submission struct {
	req  engine.Request
	done chan<- engine.Response
}

// snapshotResult is a snapshot job the background writer has finished.
type snapshotResult struct {
	job   *engine.SnapshotJob
	err   error
	bytes int64
	took  time.Duration
}

// loop is the one goroutine that owns the engine's Node: it ticks it,
// feeds it requests, persists and applies what it is ready to, and hands
// out answers. Request goroutines talk to it through do and read the
// views it publishes.
type loop struct {
	node   *engine.Node
	log    *raftlog.Log
	lg     *zap.Logger
	tick   time.Duration
	noSync bool

	submitc chan submission
	recvc   chan inbound
	reportc chan report
	// tr sends the node's messages; nil until the member sets it, before
	// run.
	tr *transport
	// callc takes functions to run on the loop goroutine, which owns the
	// node.
	callc chan func(*engine.Node)
	// membersc is signalled, without blocking, when the members table
	// changes.
	membersc chan struct{}
	stopc    chan struct{}
	donec    chan struct{}
	stop     sync.Once
	// err is why the loop ended on its own; read it after donec closes.
	err error

	// waiters are the reply channels of submitted requests; only the loop
	// goroutine touches it.
	waiters map[engine.ID]chan<- engine.Response

	// snapshotting is the snapshot job a background goroutine is writing,
	// nil when none is; only the loop goroutine touches it. The writer
	// reports on snapshotc (room for the one result, so it never blocks)
	// and gives up early once snapshotStop is set.
	snapshotting *engine.SnapshotJob
	snapshotc    chan snapshotResult
	snapshotStop atomic.Bool

	// leaderSince is when this member last saw a new leader, in Unix
	// nanoseconds.
	leaderSince atomic.Int64

	view   atomic.Pointer[mvcc.View]
	status atomic.Pointer[engine.Status]
	// watch, once set, is handed each view the loop publishes.
	watch atomic.Pointer[watchHub]
	// tokens, once set, registers the simple auth tokens applied.
	tokens atomic.Pointer[simpleTokens]
	// hashes takes the hashes of the compactions applied.
	hashes *compactionHashes
}

func newLoop(node *engine.Node, log *raftlog.Log, lg *zap.Logger, tick time.Duration, noSync bool) *loop {
	l := &loop{
		node:     node,
		log:      log,
		lg:       lg,
		tick:     tick,
		noSync:   noSync,
		submitc:  make(chan submission, submitQueueMax),
		recvc:    make(chan inbound, recvQueueMax),
		reportc:  make(chan report, reportQueueMax),
		membersc: make(chan struct{}, 1),
		callc:    make(chan func(*engine.Node)),
		stopc:    make(chan struct{}),
		donec:    make(chan struct{}),
		waiters:  make(map[engine.ID]chan<- engine.Response),

		snapshotc: make(chan snapshotResult, 1),
		hashes:    newCompactionHashes(),
	}
	st := node.Status()
	l.status.Store(&st)
	// The table restored from a snapshot is news too: it names the peers.
	l.membersc <- struct{}{}
	return l
}

func (l *loop) run() {
	defer close(l.donec)
	defer l.hashes.close()
	defer l.failWaiters()
	defer l.abandonSnapshot()
	ticker := time.NewTicker(l.tick)
	defer ticker.Stop()
	if err := l.process(); err != nil {
		l.fail(err)
		return
	}
	for {
		select {
		case <-ticker.C:
			l.node.Tick()
		case s := <-l.submitc:
			l.submit(s)
			l.drainSubmissions()
		case in := <-l.recvc:
			l.step(in)
			l.drainInbound()
		case fn := <-l.callc:
			fn(l.node)
		case r := <-l.reportc:
			if r.snapshot {
				l.node.ReportSnapshot(r.to, r.delivered)
			} else {
				l.node.ReportUnreachable(r.to)
			}
		case r := <-l.snapshotc:
			if err := l.finishSnapshot(r); err != nil {
				l.fail(err)
				return
			}
		case <-l.stopc:
			return
		}
		if err := l.process(); err != nil {
			l.fail(err)
			return
		}
	}
}

// fail records why the loop stops on its own. Every such error is a failed
// read, write or fsync of the member's durable state: the member stops
// rather than retry (after a failed fsync the kernel may have dropped the
// pages it could not write).
func (l *loop) fail(err error) {
	l.err = err
	l.lg.Error("member stopped: its durable state could not be read, written or synced; an fsync is never retried", zap.Error(err))
}

func (l *loop) drainSubmissions() {
	for range submitBatchMax {
		select {
		case s := <-l.submitc:
			l.submit(s)
		default:
			return
		}
	}
}

func (l *loop) drainInbound() {
	for range recvBatchMax {
		select {
		case in := <-l.recvc:
			l.step(in)
		default:
			return
		}
	}
}

// step hands the node a peer's message.
func (l *loop) step(in inbound) {
	if err := l.node.Step(in.msg); err != nil {
		l.lg.Debug("dropped a peer message", zap.Stringer("type", in.msg.GetType()), zap.Error(err))
	}
}

// receive queues a peer's message for the loop, waiting while the queue is
// full; false means the loop or stop ended first.
func (l *loop) receive(in inbound, stop <-chan struct{}) bool {
	select {
	case l.recvc <- in:
		return true
	case <-l.donec:
		return false
	case <-stop:
		return false
	}
}

// report queues the transport's news about a peer. A snapshot's outcome
// must reach raft, so it waits for room; an unreachable report is
// dropped when the queue is full.
func (l *loop) report(r report) {
	if !r.snapshot {
		select {
		case l.reportc <- r:
		default:
		}
		return
	}
	select {
	case l.reportc <- r:
	case <-l.donec:
	}
}

func (l *loop) submit(s submission) {
	id, err := l.node.Submit(s.req)
	if err != nil {
		s.done <- engine.Response{Err: err}
		return
	}
	l.waiters[id] = s.done
}

// process does everything the node is ready for: persist, send, apply,
// publish, answer, and start a snapshot that is due. An error is a failed
// write or fsync of the raft log, or a failed read of a snapshot, after
// which the member must stop: an fsync is never retried.
func (l *loop) process() error {
	for l.node.HasReady() {
		rd := l.node.Ready()
		if rd.Snapshot != nil {
			if err := l.log.ApplySnapshot(rd.Snapshot.GetMetadata()); err != nil {
				return fmt.Errorf("installing the snapshot at index %d: %w", rd.Snapshot.GetMetadata().GetIndex(), err)
			}
		}
		if err := l.log.Save(rd.HardState, rd.Entries, rd.MustSync && !l.noSync); err != nil {
			return fmt.Errorf("saving raft ready: %w", err)
		}
		unsent := l.send(rd.Messages)
		out := l.node.Advance(rd)
		if out.Err != nil {
			return out.Err
		}
		for _, r := range unsent {
			if r.snapshot {
				l.node.ReportSnapshot(r.to, false)
			} else {
				l.node.ReportUnreachable(r.to)
			}
		}
		if out.Snapshot != nil {
			if err := l.startSnapshot(out.Snapshot); err != nil {
				return err
			}
		}
		if len(out.Compactions) > 0 {
			l.hashes.add(out.Compactions)
		}
		if out.View != nil {
			l.view.Store(out.View)
			if h := l.watch.Load(); h != nil {
				h.publish(out.View)
			}
		}
		st := l.node.Status()
		if old := l.status.Load(); !sameMembers(old.Members, st.Members) || old.Removed != st.Removed {
			select {
			case l.membersc <- struct{}{}:
			default:
			}
		}
		if old := l.status.Load(); st.Leader != 0 && st.Leader != old.Leader {
			l.leaderSince.Store(time.Now().UnixNano())
		}
		l.status.Store(&st)
		if ts := l.tokens.Load(); ts != nil && len(out.Tokens) > 0 {
			ts.register(out.Tokens, time.Now())
		}
		for _, r := range out.Responses {
			if w, ok := l.waiters[r.ID]; ok {
				delete(l.waiters, r.ID)
				w <- r
			}
		}
	}
	return nil
}

// send hands the messages to the transport; it returns the reports to
// make for those it could not take. A MsgSnap's body is opened here, on
// the log's goroutine, while the log's base is still that snapshot; the
// transport streams it on a goroutine of its own.
func (l *loop) send(msgs []*raftpb.Message) []report {
	var unsent []report
	for _, m := range msgs {
		if l.tr == nil {
			continue
		}
		if m.GetType() != raftpb.MsgSnap {
			if !l.tr.send(m) {
				unsent = append(unsent, report{to: m.GetTo()})
			}
			continue
		}
		meta, body, err := l.log.OpenSnapshot()
		if err == nil && (meta.GetIndex() != m.GetSnapshot().GetMetadata().GetIndex() || meta.GetTerm() != m.GetSnapshot().GetMetadata().GetTerm()) {
			body.Close()
			err = fmt.Errorf("the log's base is %d/%d", meta.GetIndex(), meta.GetTerm())
		}
		if err != nil {
			l.lg.Warn("cannot send a snapshot", zap.String("remote-peer-id", idString(m.GetTo())), zap.Error(err))
			unsent = append(unsent, report{to: m.GetTo(), snapshot: true})
			continue
		}
		l.tr.sendSnapshot(m, body)
	}
	return unsent
}

// sameMembers reports whether two members lists from Status are the same;
// members are never modified, so comparing pointers is enough.
func sameMembers(a, b []*pb.Member) bool {
	return slices.Equal(a, b)
}

// startSnapshot creates the snapshot file for job and writes it on a
// background goroutine; the loop goes on applying meanwhile, and
// finishSnapshot takes the result.
func (l *loop) startSnapshot(job *engine.SnapshotJob) error {
	w, err := l.log.CreateSnapshot(job.Meta)
	if err != nil {
		return fmt.Errorf("creating the snapshot at index %d: %w", job.Meta.GetIndex(), err)
	}
	l.snapshotting = job
	go func() {
		start := time.Now()
		cw := &stoppableWriter{w: w, stop: &l.snapshotStop}
		err := engine.WriteSnapshot(cw, job)
		if err == nil {
			err = w.Commit()
		} else {
			err = errors.Join(err, w.Abort())
		}
		l.snapshotc <- snapshotResult{job: job, err: err, bytes: cw.n, took: time.Since(start)}
	}()
	return nil
}

// finishSnapshot makes a written snapshot the log's base, which releases
// the WAL segments and snapshot files it makes unnecessary.
func (l *loop) finishSnapshot(r snapshotResult) error {
	l.snapshotting = nil
	index := r.job.Meta.GetIndex()
	if r.err != nil {
		l.node.SnapshotDone(r.job, r.err)
		return fmt.Errorf("writing the snapshot at index %d: %w", index, r.err)
	}
	if !l.node.SnapshotDone(r.job, nil) {
		return nil
	}
	if err := l.log.SnapshotSaved(r.job.Meta); err != nil {
		return fmt.Errorf("saving the snapshot at index %d: %w", index, err)
	}
	l.lg.Info("saved snapshot", zap.Uint64("snapshot-index", index), zap.Int64("bytes", r.bytes), zap.Duration("took", r.took))
	return nil
}

// abandonSnapshot stops a snapshot being written and waits for its writer,
// so that its file is closed and removed before the log is.
func (l *loop) abandonSnapshot() {
	if l.snapshotting == nil {
		return
	}
	l.snapshotStop.Store(true)
	r := <-l.snapshotc
	l.snapshotting = nil
	if r.err == nil {
		// It was committed before the stop reached it: a later start may
		// use it, since recovery takes the newest intact snapshot the log
		// can continue from.
		l.lg.Info("snapshot written while stopping", zap.Uint64("snapshot-index", r.job.Meta.GetIndex()))
	}
}

// stoppableWriter counts what it writes and fails once stop is set.
type stoppableWriter struct {
	w    io.Writer
	stop *atomic.Bool
	n    int64
}

func (s *stoppableWriter) Write(p []byte) (int, error) {
	if s.stop.Load() {
		return 0, errStopped
	}
	n, err := s.w.Write(p)
	s.n += int64(n)
	return n, err
}

func (l *loop) failWaiters() {
	for id, w := range l.waiters {
		w <- engine.Response{ID: id, Err: errStopped}
	}
	l.waiters = nil
}

// do submits r and waits for its answer.
func (l *loop) do(ctx context.Context, r engine.Request) (engine.Response, error) {
	if r.Op != nil && r.Op.Header == nil {
		r.Op.Header = opHeader(ctx)
	}
	done := make(chan engine.Response, 1)
	s := submission{req: r, done: done}
	// The queue almost always has room: only a full one needs the
	// three-way select (and the context's Done channel).
	select {
	case l.submitc <- s:
	default:
		select {
		case l.submitc <- s:
		case <-ctx.Done():
			return engine.Response{}, ctx.Err()
		case <-l.donec:
			return engine.Response{}, errStopped
		}
	}
	select {
	case resp := <-done:
		return resp, resp.Err
	case <-ctx.Done():
		return engine.Response{}, ctx.Err()
	case <-l.donec:
		return engine.Response{}, errStopped
	}
}

// call runs fn with the node on the loop goroutine and waits for it.
func (l *loop) call(ctx context.Context, fn func(*engine.Node)) error {
	done := make(chan struct{})
	wrapped := func(n *engine.Node) {
		fn(n)
		close(done)
	}
	select {
	case l.callc <- wrapped:
	case <-ctx.Done():
		return ctx.Err()
	case <-l.donec:
		return errStopped
	}
	<-done
	return nil
}

// Stop ends the loop and waits for it.
func (l *loop) Stop() {
	l.stop.Do(func() { close(l.stopc) })
	<-l.donec
}
