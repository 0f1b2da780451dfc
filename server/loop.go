package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

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
)

// errStopped is returned to requests when the loop is gone, and by a
// snapshot being written when the loop stops.
var errStopped = errors.New("server: member stopped")

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
	stopc   chan struct{}
	donec   chan struct{}
	stop    sync.Once
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

	view   atomic.Pointer[mvcc.View]
	status atomic.Pointer[engine.Status]
}

func newLoop(node *engine.Node, log *raftlog.Log, lg *zap.Logger, tick time.Duration, noSync bool) *loop {
	l := &loop{
		node:    node,
		log:     log,
		lg:      lg,
		tick:    tick,
		noSync:  noSync,
		submitc: make(chan submission, submitQueueMax),
		stopc:   make(chan struct{}),
		donec:   make(chan struct{}),
		waiters: make(map[engine.ID]chan<- engine.Response),

		snapshotc: make(chan snapshotResult, 1),
	}
	st := node.Status()
	l.status.Store(&st)
	return l
}

func (l *loop) run() {
	defer close(l.donec)
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
		out := l.node.Advance(rd)
		if out.Err != nil {
			return out.Err
		}
		if out.Snapshot != nil {
			if err := l.startSnapshot(out.Snapshot); err != nil {
				return err
			}
		}
		if out.View != nil {
			l.view.Store(out.View)
		}
		st := l.node.Status()
		l.status.Store(&st)
		for _, r := range out.Responses {
			if w, ok := l.waiters[r.ID]; ok {
				delete(l.waiters, r.ID)
				w <- r
			}
		}
	}
	return nil
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

// Stop ends the loop and waits for it.
func (l *loop) Stop() {
	l.stop.Do(func() { close(l.stopc) })
	<-l.donec
}
