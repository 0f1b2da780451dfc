package server

import (
	"runtime"
	"sync"
	"time"
)

// fanoutPacer keeps the watch fan-out (the streams' senders, and the hub's passes that queue
// new revisions for synced watchers and catch up the others) to a share of the member's time,
// so that the writes keep theirs when watchers want more events than the machine can deliver.
// Each piece of fan-out work reports how long it took; the fan-out then rests, all of it,
// until the work done fits in its share of the time since. Watchers that fall behind
// meanwhile catch up later in fewer, larger responses, which costs less per event. Below its
// share the fan-out never waits, nor does it for the first watchFanoutBurst of rest it owes:
// a burst of events is sent at once, and only a fan-out that keeps its share busy is slowed.
//
// Time is wall time, not CPU time: when the fan-out's goroutines wait for a core the writes
// hold, their work takes longer and they rest longer, which is the point.
type fanoutPacer struct {
	// coresMax is how many cores' worth of time the fan-out may use.
	coresMax float64

	mu sync.Mutex
	// next is when the fan-out's work so far, done at coresMax, would end (idle time is not
	// saved up). It may work until next is watchFanoutBurst ahead of now.
	next time.Time
}

func newFanoutPacer() *fanoutPacer {
	return &fanoutPacer{coresMax: max(watchFanoutCoresMin, watchFanoutShare*float64(runtime.GOMAXPROCS(0)))}
}

// delay returns how long the fan-out must rest from now on; zero when it may work.
func (p *fanoutPacer) delay(now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return max(0, p.next.Add(-watchFanoutBurst).Sub(now))
}

// charge reports work of duration d that ended at now.
func (p *fanoutPacer) charge(now time.Time, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next.Before(now) {
		p.next = now
	}
	p.next = p.next.Add(time.Duration(float64(d) / p.coresMax))
}

// rest waits until the fan-out may work; false if closec closed first.
func (p *fanoutPacer) rest(closec <-chan struct{}) bool {
	d := p.delay(time.Now())
	if d == 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-closec:
		return false
	}
}
