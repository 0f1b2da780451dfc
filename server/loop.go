package server

import (
	"context"
	"errors"
	"fmt"
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

// errStopped is returned to requests when the loop is gone.
var errStopped = errors.New("server: member stopped")

type submission struct {
	req  engine.Request
	done chan<- engine.Response
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
	}
	st := node.Status()
	l.status.Store(&st)
	return l
}

func (l *loop) run() {
	defer close(l.donec)
	defer l.failWaiters()
	ticker := time.NewTicker(l.tick)
	defer ticker.Stop()
	if err := l.process(); err != nil {
		l.err = err
		return
	}
	for {
		select {
		case <-ticker.C:
			l.node.Tick()
		case s := <-l.submitc:
			l.submit(s)
			l.drainSubmissions()
		case <-l.stopc:
			return
		}
		if err := l.process(); err != nil {
			l.err = err
			l.lg.Error("member stopped: persisting the raft log failed", zap.Error(err))
			return
		}
	}
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
// publish, answer. An error is a failed write or fsync of the raft log,
// after which the member must stop: an fsync is never retried.
func (l *loop) process() error {
	for l.node.HasReady() {
		rd := l.node.Ready()
		if err := l.log.Save(rd.HardState, rd.Entries, rd.MustSync && !l.noSync); err != nil {
			return fmt.Errorf("saving raft ready: %w", err)
		}
		out := l.node.Advance(rd)
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

func (l *loop) failWaiters() {
	for id, w := range l.waiters {
		w <- engine.Response{ID: id, Err: errStopped}
	}
	l.waiters = nil
}

// do submits r and waits for its answer.
func (l *loop) do(ctx context.Context, r engine.Request) (engine.Response, error) {
	done := make(chan engine.Response, 1)
	select {
	case l.submitc <- submission{req: r, done: done}:
	case <-ctx.Done():
		return engine.Response{}, ctx.Err()
	case <-l.donec:
		return engine.Response{}, errStopped
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
