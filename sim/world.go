package sim

import (
	"fmt"
	"math"
	"runtime/debug"
	"strings"
	"time"
)

// eventKind names what an event does, for the trace.
type eventKind uint8

const (
	evTick eventKind = iota + 1
	evDeliver
	evIODone
	evDeferredSync
	evClient
	evClientReply
	evClientTimeout
	evNemesis
	evHeal
	evRestart
	evUnpause
	evLiveness
	evSnapshot
	evMember
	evWatch
)

// event is one scheduled action. Events run in (at, seq) order; seq is the
// order of scheduling, so ties are broken the same way in every run.
type event struct {
	at   time.Duration
	seq  uint64
	kind eventKind
	// member is the member the event concerns, -1 for none.
	member int
	fn     func()
}

// eventHeap is a binary min-heap of events by (at, seq).
type eventHeap []*event

func (h eventHeap) less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}

func (h *eventHeap) push(e *event) {
	*h = append(*h, e)
	q := *h
	for i := len(q) - 1; i > 0; {
		p := (i - 1) / 2
		if !q.less(i, p) {
			break
		}
		q[i], q[p] = q[p], q[i]
		i = p
	}
}

func (h *eventHeap) pop() *event {
	q := *h
	top := q[0]
	last := len(q) - 1
	q[0] = q[last]
	q[last] = nil
	q = q[:last]
	for i := 0; ; {
		l, r, min := 2*i+1, 2*i+2, i
		if l < len(q) && q.less(l, min) {
			min = l
		}
		if r < len(q) && q.less(r, min) {
			min = r
		}
		if min == i {
			break
		}
		q[i], q[min] = q[min], q[i]
		i = min
	}
	*h = q
	return top
}

// phase is where a run is.
type phase uint8

const (
	phaseSafety phase = iota
	phaseLiveness
	phaseDone
)

// World is one simulated cluster: its members, network, clients and
// checkers, driven by one event heap on one goroutine.
type World struct {
	opts Options
	// now is the simulated time of the event being run.
	now time.Duration
	seq uint64
	q   eventHeap
	// trace is a running hash of every event run and of what it did (the
	// messages, the answers): equal traces mean equal runs.
	trace  uint64
	events int64
	phase  phase

	members []*member
	net     *network
	work    *workload
	chk     *checker
	live    *liveness
	ops     *operator
	watch   *watchSim
	fault   rng

	// disturbed are the windows in which a fault, or the election after
	// one, may have delayed the cluster, each extended by disturbSettle;
	// the lease checker expects timely expiry only outside them.
	// Invariant: from is non-decreasing, but for partitions, which are
	// recorded when they heal.
	disturbed []window

	// failure is the first violation found; the run stops there.
	failure *Violation
	stats   Stats
}

// Stats are figures of a run.
type Stats struct {
	SimTime    time.Duration
	Events     int64
	Ops        int
	Acked      int
	Entries    int
	Crashes    int
	Restarts   int
	Pauses     int
	Partitions int
	Messages   int64
	Dropped    int64
	Corrupted  int
	Snapshots  int
	// Installed counts the snapshots members received from a leader.
	Installed int
	// Leases counts the committed grants; Expired the leases the leader
	// revoked on expiry; Quiet the leases whose expiry window no fault
	// disturbed, which the late lease check covered.
	Leases, Expired, Quiet int
	// Members are the membership changes' figures.
	Members MemberStats
	// WatchEvents counts the events the simulated watchers received and checked.
	WatchEvents int
	// Unrecoverable is set when rot was found on so many core members that
	// no majority was left; the liveness and history checks are skipped.
	Unrecoverable bool
}

// Violation says what broke.
type Violation struct {
	// Check names the checker or invariant.
	Check string
	// Detail explains it, with the values involved.
	Detail string
	// At is the simulated time it was found.
	At time.Duration
}

func (v *Violation) Error() string {
	return fmt.Sprintf("%s at %v: %s", v.Check, v.At, v.Detail)
}

// Result is the outcome of one run.
type Result struct {
	Options Options
	// Failure is nil when every check passed.
	Failure *Violation
	// Trace is the hash of every event of the run.
	Trace uint64
	Stats Stats
}

// Line is the one-line summary `basalt sim` prints for the run.
func (r Result) Line() string {
	s := r.Stats
	figures := fmt.Sprintf("members=%d sim=%v events=%d ops=%d acked=%d log=%d snapshots=%d installed=%d crashes=%d pauses=%d partitions=%d corrupted=%d leases=%d expired=%d quiet=%d watched=%d",
		r.Options.Members, s.SimTime.Truncate(time.Millisecond), s.Events, s.Ops, s.Acked, s.Entries, s.Snapshots, s.Installed, s.Crashes, s.Pauses, s.Partitions, s.Corrupted, s.Leases, s.Expired, s.Quiet, s.WatchEvents)
	figures += s.Members.String()
	if r.Failure != nil {
		return fmt.Sprintf("seed %d FAIL %s trace=%016x\n  %s", r.Options.Seed, figures, r.Trace, strings.ReplaceAll(r.Failure.Error(), "\n", "\n  "))
	}
	return fmt.Sprintf("seed %d ok %s trace=%016x", r.Options.Seed, figures, r.Trace)
}

// Run simulates the cluster opts describes and checks it. raft draws its
// election jitter from crypto/rand.Reader: the caller must point it at the
// run's stream (SeedCryptoRand, or testing/cryptotest.SetGlobalRandom with
// RaftCryptoSeed) and run one simulation per process at a time.
func Run(opts Options) (res Result) {
	w := newWorld(opts)
	defer func() {
		if r := recover(); r != nil {
			w.fail("simulator panic", fmt.Sprintf("%v\n%s", r, debug.Stack()))
		}
		res = w.result()
	}()
	w.start()
	for len(w.q) > 0 && w.failure == nil && w.phase != phaseDone {
		e := w.q.pop()
		w.now = e.at
		w.events++
		w.mix(uint64(e.at), uint64(e.kind), uint64(int64(e.member)))
		if w.events > eventsMax {
			w.fail("simulator", fmt.Sprintf("more than %d events", eventsMax))
			break
		}
		e.fn()
	}
	if w.failure == nil && w.phase != phaseDone {
		w.fail("simulator", "the event queue ran dry before the run ended")
	}
	return w.result()
}

func newWorld(opts Options) *World {
	w := &World{opts: opts, trace: 14695981039346656037, fault: newRNG(opts.Seed, streamFault)}
	w.chk = newChecker(w)
	w.net = newNetwork(w)
	w.ops = newOperator(w)
	for i := range opts.Members {
		w.members = append(w.members, newMember(w, i, w.fault))
	}
	w.work = newWorkload(w)
	w.watch = newWatchSim(w)
	return w
}

func (w *World) result() Result {
	w.stats.SimTime = w.now
	w.stats.Events = w.events
	w.stats.Ops = len(w.work.ops)
	w.stats.Entries = len(w.chk.committed)
	return Result{Options: w.opts, Failure: w.failure, Trace: splitmix64(w.trace), Stats: w.stats}
}

// mix adds words to the trace hash (FNV-1a over 64-bit words).
func (w *World) mix(words ...uint64) {
	h := w.trace
	for _, x := range words {
		h ^= x
		h *= 1099511628211
	}
	w.trace = h
}

// window is the time window [from, to].
type window struct{ from, to time.Duration }

// disturb records that the cluster was disturbed over [from, to], and
// for disturbSettle after: long enough for an election to start and end.
// A window that overlaps the last one joins it, so that a steady fault
// (drops) keeps the record short.
func (w *World) disturb(from, to time.Duration) {
	if to < math.MaxInt64-disturbSettle {
		to += disturbSettle
	}
	if k := len(w.disturbed); k > 0 && from >= w.disturbed[k-1].from && from <= w.disturbed[k-1].to {
		w.disturbed[k-1].to = max(w.disturbed[k-1].to, to)
		return
	}
	w.disturbed = append(w.disturbed, window{from, to})
}

// quiet reports whether nothing disturbed the cluster over [from, to].
func (w *World) quiet(from, to time.Duration) bool {
	for _, d := range w.disturbed {
		if d.from <= to && d.to >= from {
			return false
		}
	}
	return true
}

// at schedules fn at time t.
func (w *World) at(t time.Duration, kind eventKind, member int, fn func()) {
	if t < w.now {
		panic(fmt.Sprintf("sim: event %d scheduled at %v, before now %v", kind, t, w.now))
	}
	w.seq++
	w.q.push(&event{at: t, seq: w.seq, kind: kind, member: member, fn: fn})
}

// after schedules fn d from now.
func (w *World) after(d time.Duration, kind eventKind, member int, fn func()) {
	w.at(w.now+d, kind, member, fn)
}

// fail records a violation; the run stops after the current event.
func (w *World) fail(check, detail string) {
	if w.failure == nil {
		w.failure = &Violation{Check: check, Detail: detail, At: w.now}
	}
}

func (w *World) start() {
	for _, m := range w.members {
		m.boot()
	}
	w.work.start()
	w.ops.start()
	w.watch.start()
	w.after(nemesisInterval, evNemesis, -1, w.nemesis)
	w.at(w.opts.Safety, evLiveness, -1, w.startLiveness)
}

// quorum is the size of a majority of the voters.
func (w *World) quorum() int { return w.ops.voterCount()/2 + 1 }

// nemesis rolls the process and network faults once a second.
func (w *World) nemesis() {
	if w.phase != phaseSafety {
		return
	}
	f := w.opts.Faults
	for _, m := range w.members {
		switch {
		case !m.up || m.failed:
		case w.fault.chance(f.CrashPPM):
			m.crash("nemesis")
		case !m.paused() && w.fault.chance(f.PausePPM):
			m.pause(w.fault.expish(f.PauseMean) + time.Millisecond)
		}
	}
	w.net.nemesis()
	w.after(nemesisInterval, evNemesis, -1, w.nemesis)
}

// restartDelay draws how long a crashed member stays down.
func (w *World) restartDelay() time.Duration {
	f := w.opts.Faults
	if w.fault.chance(f.FastRestartPPM) {
		return w.fault.dur(10*time.Millisecond, 500*time.Millisecond)
	}
	return w.fault.expish(f.RestartMean) + 10*time.Millisecond
}
