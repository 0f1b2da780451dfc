package sim

import (
	"errors"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/engine"
	"github.com/basaltdb/basalt/engine/mvcc"
)

// opKind is a kind of client operation.
type opKind int

const (
	opPut opKind = iota
	opGet
	opRange
	opDelete
	opDeleteRange
	opTxn
	opCompact
	opKinds
	// opLease is an operation of a lease client (lease.go); it has no
	// weight in WorkOptions.Mix.
	opLease = opKinds
)

func (k opKind) String() string {
	return [...]string{"put", "get", "range", "del", "delrange", "txn", "compact", "lease"}[k]
}

// op is one logical client operation; each try is an attempt.
type op struct {
	id     int
	client int
	kind   opKind
	// key is the key of a single-key op (put, get, del, txn).
	key   string
	write *pb.InternalRaftRequest
	read  *pb.RangeRequest
	// serializable reads skip the read barrier.
	serializable bool
	// lease, leaseID, withKeys, keep and loop describe an opLease (lease.go).
	lease    leaseOpKind
	leaseID  int64
	withKeys bool
	keep     bool
	loop     bool
	attempts []*attempt
	done     bool
}

// attemptState is what a client knows of one attempt.
type attemptState uint8

const (
	// attemptPending: sent, no answer yet.
	attemptPending attemptState = iota
	// attemptOK: answered, with a result or an error of the request
	// itself (a read of a compacted revision, a compaction that failed).
	attemptOK
	// attemptRefused: answered with an error that says the request was not
	// proposed (no leader, too many requests, no view yet).
	attemptRefused
	// attemptIndefinite: timed out, or answered ErrTimeout: it may still
	// commit.
	attemptIndefinite
)

// attempt is one try of an op at one member.
type attempt struct {
	op     *op
	member int
	// sent and answered are when the client sent it and got its answer.
	sent, answered time.Duration
	// id is the engine's request ID; 0 if the member never took it.
	id    engine.ID
	state attemptState
	resp  proto.Message
	err   error
	// viewRev is the revision of the view a read was served from.
	viewRev int64
}

// client is one simulated client: it runs one op at a time.
type client struct {
	idx int
	seq int
	// maxRev is the newest revision the client has seen.
	maxRev int64
	// modRev is the mod revision the client last saw for a key (0: absent).
	modRev map[string]int64
}

// workload runs the simulated clients and records their history.
type workload struct {
	w       *World
	rng     rng
	o       WorkOptions
	clients []*client
	// lrng draws everything about the lease clients, so that they leave
	// the other clients' draws alone.
	lrng   rng
	leases []*leaseClient
	// leaseThink is the mean pause between a lease client's ops.
	leaseThink time.Duration
	ops        []*op
	// keys is the key space, sorted: keys[i] is the i-th key.
	keys []string
	// think is the mean pause between a client's ops.
	think time.Duration
}

func newWorkload(w *World) *workload {
	wl := &workload{w: w, rng: newRNG(w.opts.Seed, streamWork), o: w.opts.Work}
	for i := range wl.o.Clients {
		wl.clients = append(wl.clients, &client{idx: i, modRev: map[string]int64{}})
	}
	for i := range wl.o.Keys {
		wl.keys = append(wl.keys, fmt.Sprintf("k%03d", i))
	}
	if wl.o.Rate > 0 {
		wl.think = time.Duration(wl.o.Clients) * time.Second / time.Duration(wl.o.Rate)
	}
	wl.newLeaseClients()
	return wl
}

func (wl *workload) start() {
	wl.startLeaseClients()
	if wl.think == 0 {
		return
	}
	for _, c := range wl.clients {
		wl.w.after(wl.rng.dur(0, wl.think), evClient, -1, func() { wl.next(c) })
	}
}

// rngOf is the stream that draws for op o.
func (wl *workload) rngOf(o *op) rng {
	if o.kind == opLease {
		return wl.lrng
	}
	return wl.rng
}

// next starts the client's next op, unless the safety phase is over.
func (wl *workload) next(c *client) {
	if wl.w.phase != phaseSafety || len(wl.ops) >= opsMax {
		return
	}
	o := wl.newOp(c)
	wl.ops = append(wl.ops, o)
	wl.issue(o)
}

// key returns the i-th key, or the first key past the key space.
func (wl *workload) key(i uint64) string {
	if i < uint64(len(wl.keys)) {
		return wl.keys[i]
	}
	return fmt.Sprintf("k%03d", i)
}

func (wl *workload) randomKey() string { return wl.key(wl.rng.intN(uint64(wl.o.Keys))) }

// newOp draws the client's next operation.
func (wl *workload) newOp(c *client) *op {
	c.seq++
	o := &op{id: len(wl.ops), client: c.idx, kind: opKind(wl.rng.pick(wl.o.Mix[:]))}
	value := []byte(fmt.Sprintf("c%d-%d", c.idx, c.seq))
	switch o.kind {
	case opPut:
		o.key = wl.randomKey()
		o.write = &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(o.key), Value: value, PrevKv: wl.rng.intN(2) == 0}}
	case opGet:
		o.key = wl.randomKey()
		o.read = &pb.RangeRequest{Key: []byte(o.key)}
		wl.readOptions(c, o)
	case opRange:
		lo, hi := wl.keyRange()
		o.read = &pb.RangeRequest{Key: []byte(lo), RangeEnd: []byte(hi)}
		if wl.rng.intN(2) == 0 {
			o.read.Limit = int64(wl.rng.between(1, 5))
		}
		wl.readOptions(c, o)
	case opDelete:
		o.key = wl.randomKey()
		o.write = &pb.InternalRaftRequest{DeleteRange: &pb.DeleteRangeRequest{Key: []byte(o.key), PrevKv: wl.rng.intN(2) == 0}}
	case opDeleteRange:
		lo, hi := wl.keyRange()
		o.write = &pb.InternalRaftRequest{DeleteRange: &pb.DeleteRangeRequest{Key: []byte(lo), RangeEnd: []byte(hi), PrevKv: wl.rng.intN(2) == 0}}
	case opTxn:
		// A compare-and-set on one key against the mod revision the client
		// last saw: the shape of Kubernetes' optimistic updates.
		o.key = wl.randomKey()
		k := []byte(o.key)
		get := &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: k}}}
		o.write = &pb.InternalRaftRequest{Txn: &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: k, Target: pb.Compare_MOD, Result: pb.Compare_EQUAL,
				TargetUnion: &pb.Compare_ModRevision{ModRevision: c.modRev[o.key]}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: k, Value: value}}}, get},
			Failure: []*pb.RequestOp{get},
		}}
	case opCompact:
		rev := c.maxRev - int64(wl.rng.intN(50))
		o.write = &pb.InternalRaftRequest{Compaction: &pb.CompactionRequest{Revision: max(rev, 1), Physical: wl.rng.intN(4) == 0}}
	}
	return o
}

// keyRange draws [lo, hi) of at most rangeKeysMax keys, as a prefix
// would select; hi may be past the key space, or equal to lo (empty).
func (wl *workload) keyRange() (string, string) {
	a := wl.rng.intN(uint64(wl.o.Keys))
	return wl.key(a), wl.key(a + wl.rng.intN(rangeKeysMax+1))
}

func (wl *workload) readOptions(c *client, o *op) {
	o.serializable = wl.rng.chance(wl.o.SerializablePPM)
	o.read.Serializable = o.serializable
	if c.maxRev > 0 && wl.rng.chance(wl.o.OldRevPPM) {
		o.read.Revision = wl.rng.between(1, c.maxRev)
	}
}

// issue sends a new attempt of o to a member; a lease op's retry goes to
// another member than its last attempt, as clientv3 moves on from a member
// that is not the leader.
func (wl *workload) issue(o *op) {
	w := wl.w
	g := wl.rngOf(o)
	eps := w.ops.clientEndpoints()
	member := eps[g.intN(uint64(len(eps)))]
	if k := len(o.attempts); o.kind == opLease && k > 0 && len(eps) > 1 {
		last := o.attempts[k-1].member
		others := make([]int, 0, len(eps))
		for _, e := range eps {
			if e != last {
				others = append(others, e)
			}
		}
		if len(others) > 0 {
			member = others[g.intN(uint64(len(others)))]
		}
	}
	a := &attempt{op: o, member: member, sent: w.now}
	o.attempts = append(o.attempts, a)
	m := w.members[a.member]
	w.after(g.dur(clientLinkDelayMin, clientLinkDelayMax), evClient, a.member, func() { m.request(a) })
	w.after(wl.o.Timeout, evClientTimeout, -1, func() {
		if a.state == attemptPending {
			a.state, a.answered = attemptIndefinite, w.now
			wl.settle(a)
		}
	})
}

// reply sends a member's answer back to the client.
func (wl *workload) reply(a *attempt, resp proto.Message, err error, viewRev int64) {
	wl.w.after(wl.rngOf(a.op).dur(clientLinkDelayMin, clientLinkDelayMax), evClientReply, -1, func() {
		wl.receive(a, resp, err, viewRev)
	})
}

func (wl *workload) receive(a *attempt, resp proto.Message, err error, viewRev int64) {
	if a.state != attemptPending {
		return // the client gave up on it
	}
	a.answered, a.resp, a.err, a.viewRev = wl.w.now, resp, err, viewRev
	switch {
	case err == nil:
		a.state = attemptOK
	case errors.Is(err, engine.ErrTimeout):
		a.state = attemptIndefinite
	case errors.Is(err, engine.ErrNoLeader), errors.Is(err, engine.ErrTooManyRequests), errors.Is(err, errNotReady),
		errors.Is(err, engine.ErrNotLeader), errors.Is(err, errLearnerRefused):
		a.state = attemptRefused
	default:
		a.state = attemptOK
	}
	wl.w.mix(uint64(evClientReply), uint64(a.op.id), uint64(a.state), uint64(responseRev(resp)), uint64(errClass(err)))
	wl.settle(a)
}

// settle ends an attempt: the op is done, or tried again.
func (wl *workload) settle(a *attempt) {
	o := a.op
	if o.client < 0 {
		return // the liveness probe retries on its own
	}
	if o.kind == opLease {
		wl.settleLease(a)
		return
	}
	c := wl.clients[o.client]
	if a.state == attemptOK {
		if rev := responseRev(a.resp); rev > c.maxRev {
			c.maxRev = rev
		}
		wl.learn(c, o, a.resp)
		if o.write != nil && a.err == nil {
			wl.w.stats.Acked++
		}
	}
	if a.state != attemptOK && len(o.attempts) < wl.o.Attempts && wl.w.phase == phaseSafety {
		wl.w.after(retryBackoff, evClient, -1, func() { wl.issue(o) })
		return
	}
	o.done = true
	wl.w.after(wl.rng.dur(0, 2*wl.think), evClient, -1, func() { wl.next(c) })
}

// learn records the mod revisions the client saw, for its next CAS.
func (wl *workload) learn(c *client, o *op, resp proto.Message) {
	switch r := resp.(type) {
	case *pb.PutResponse:
		c.modRev[o.key] = r.GetHeader().GetRevision()
	case *pb.RangeResponse:
		if o.key != "" && o.read.Revision == 0 {
			c.modRev[o.key] = 0
			if len(r.Kvs) == 1 {
				c.modRev[o.key] = r.Kvs[0].ModRevision
			}
		}
	case *pb.TxnResponse:
		if n := len(r.Responses); n > 0 {
			if rr := r.Responses[n-1].GetResponseRange(); rr != nil {
				c.modRev[o.key] = 0
				if len(rr.Kvs) == 1 {
					c.modRev[o.key] = rr.Kvs[0].ModRevision
				}
			}
		}
	}
}

// pending reports whether any op still waits for an answer.
func (wl *workload) pending() int {
	n := 0
	for _, o := range wl.ops {
		if !o.done {
			n++
		}
	}
	return n
}

// responseRev is the header revision of a response, 0 for none.
func responseRev(m proto.Message) int64 {
	switch r := m.(type) {
	case *pb.PutResponse:
		return r.GetHeader().GetRevision()
	case *pb.DeleteRangeResponse:
		return r.GetHeader().GetRevision()
	case *pb.RangeResponse:
		return r.GetHeader().GetRevision()
	case *pb.TxnResponse:
		return r.GetHeader().GetRevision()
	case *pb.CompactionResponse:
		return r.GetHeader().GetRevision()
	case *pb.LeaseGrantResponse:
		return r.GetHeader().GetRevision()
	case *pb.LeaseRevokeResponse:
		return r.GetHeader().GetRevision()
	case *pb.LeaseKeepAliveResponse:
		return r.GetHeader().GetRevision()
	case *pb.LeaseTimeToLiveResponse:
		return r.GetHeader().GetRevision()
	}
	return 0
}

// errClass maps an answer's error to the model's error classes; 0 is no
// error, -1 one the model does not produce.
func errClass(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, mvcc.ErrCompacted), errors.Is(err, errModelCompacted):
		return 1
	case errors.Is(err, mvcc.ErrFutureRev), errors.Is(err, errModelFuture):
		return 2
	case errors.Is(err, engine.ErrLeaseNotFound), errors.Is(err, errModelLease):
		return 3
	case errors.Is(err, engine.ErrUnknownRequest), errors.Is(err, errModelUnknown):
		return 4
	case errors.Is(err, engine.ErrLeaseExist), errors.Is(err, errModelExist):
		return 5
	case errors.Is(err, engine.ErrLeaseTTLTooLarge), errors.Is(err, errModelTTL):
		return 6
	}
	return -1
}
