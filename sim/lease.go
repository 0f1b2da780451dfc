package sim

import (
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// leaseOpKind is a kind of lease client operation.
type leaseOpKind int

const (
	// leaseGrant grants a lease with an ID of the client's choosing.
	leaseGrant leaseOpKind = iota
	// leaseAttach puts one of the client's keys with one of its leases
	// (also a revoked or never granted one, or none), plainly or as a
	// Kubernetes-style compare-and-set.
	leaseAttach
	// leaseKeepAlive renews one of the client's leases once.
	leaseKeepAlive
	// leaseRevoke revokes one of the client's leases.
	leaseRevoke
	// leaseTTL asks a lease's remaining TTL, sometimes with its keys.
	leaseTTL
	leaseOpKinds
)

func (k leaseOpKind) String() string {
	return [...]string{"grant", "attach", "keepalive", "revoke", "ttl"}[k]
}

// leaseClient is one simulated lease client. It runs one operation at a
// time, plus a keepalive loop for each lease it keeps alive.
type leaseClient struct {
	// idx is the client's index among all clients: it follows the key
	// value clients.
	idx int
	seq int
	// granted lists the IDs the client asked to grant, oldest first,
	// whatever became of them.
	granted []int64
	// kept is how many keepalive loops run. Invariant: kept <= leaseKeptMax.
	kept int
	// modRev is the mod revision the client last saw for a key (0: absent).
	modRev map[string]int64
}

func (wl *workload) newLeaseClients() {
	wl.lrng = newRNG(wl.w.opts.Seed, streamLease)
	l := wl.o.Lease
	for i := range l.Clients {
		wl.leases = append(wl.leases, &leaseClient{idx: wl.o.Clients + i, modRev: map[string]int64{}})
	}
	if l.Rate > 0 {
		wl.leaseThink = time.Duration(l.Clients) * time.Second / time.Duration(l.Rate)
	}
}

func (wl *workload) startLeaseClients() {
	if wl.leaseThink == 0 {
		return
	}
	for _, lc := range wl.leases {
		wl.w.after(wl.lrng.dur(0, wl.leaseThink), evClient, -1, func() { wl.nextLease(lc) })
	}
}

// leaseClientOf returns the lease client that runs o.
func (wl *workload) leaseClientOf(o *op) *leaseClient { return wl.leases[o.client-wl.o.Clients] }

// nextLease starts the lease client's next op, unless the safety phase
// is over.
func (wl *workload) nextLease(lc *leaseClient) {
	if wl.w.phase != phaseSafety || len(wl.ops) >= opsMax {
		return
	}
	o := wl.newLeaseOp(lc)
	wl.ops = append(wl.ops, o)
	wl.issue(o)
}

// leaseKey returns the i-th key of the leased key space.
func leaseKey(i uint64) string { return fmt.Sprintf("l%03d", i) }

// newLeaseOp draws the lease client's next operation.
func (wl *workload) newLeaseOp(lc *leaseClient) *op {
	g, lo := wl.lrng, wl.o.Lease
	lc.seq++
	o := &op{id: len(wl.ops), client: lc.idx, kind: opLease, lease: leaseOpKind(g.pick(lo.Mix[:]))}
	if len(lc.granted) == 0 {
		o.lease = leaseGrant
	}
	switch o.lease {
	case leaseGrant:
		o.leaseID = int64(lc.idx+1)<<32 | int64(lc.seq)
		if len(lc.granted) > 0 && g.chance(leaseRegrantPPM) {
			// A taken ID: the grant fails, unless its lease is gone.
			o.leaseID = lc.granted[g.intN(uint64(len(lc.granted)))]
		}
		o.keep = lc.kept < leaseKeptMax && g.chance(lo.KeepPPM)
		o.write = &pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: o.leaseID, TTL: g.between(0, lo.TTLMax)}}
	case leaseAttach:
		o.leaseID = wl.pickLease(lc)
		if g.chance(leaseDetachPPM) {
			o.leaseID = 0
		}
		o.key = leaseKey(g.intN(uint64(lo.Keys)))
		k := []byte(o.key)
		put := &pb.PutRequest{Key: k, Value: []byte(fmt.Sprintf("L%d-%d", lc.idx, lc.seq)), Lease: o.leaseID}
		if g.intN(2) == 0 {
			o.write = &pb.InternalRaftRequest{Put: put}
			break
		}
		// kube-apiserver's update of an object with a TTL: a compare-and-set
		// whose put carries the lease.
		get := &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: k}}}
		o.write = &pb.InternalRaftRequest{Txn: &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: k, Target: pb.Compare_MOD, Result: pb.Compare_EQUAL,
				TargetUnion: &pb.Compare_ModRevision{ModRevision: lc.modRev[o.key]}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: put}}, get},
			Failure: []*pb.RequestOp{get},
		}}
	case leaseKeepAlive:
		o.leaseID = wl.pickLease(lc)
	case leaseRevoke:
		o.leaseID = wl.pickLease(lc)
		o.write = &pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: o.leaseID}}
	case leaseTTL:
		o.leaseID = wl.pickLease(lc)
		o.withKeys = g.intN(2) == 0
	}
	return o
}

// pickLease picks one of the client's leases, most often a recent one,
// sometimes one it never granted.
func (wl *workload) pickLease(lc *leaseClient) int64 {
	g := wl.lrng
	if g.chance(leaseUnknownPPM) {
		return int64(lc.idx+1)<<32 | int64(lc.seq) | 1<<31
	}
	n := uint64(len(lc.granted))
	return lc.granted[n-1-g.intN(min(n, leaseRecentMax))]
}

// settleLease ends an attempt of a lease op: the op is done, or tried
// again on another member.
func (wl *workload) settleLease(a *attempt) {
	o := a.op
	lc := wl.leaseClientOf(o)
	if a.state == attemptOK && o.write != nil && a.err == nil {
		wl.w.stats.Acked++
	}
	if a.state != attemptOK && len(o.attempts) < wl.o.Attempts+len(wl.w.members) && wl.w.phase == phaseSafety {
		wl.w.after(retryBackoff, evClient, -1, func() { wl.issue(o) })
		return
	}
	o.done = true
	if o.loop {
		wl.keepAliveRound(lc, o, a)
		return
	}
	switch o.lease {
	case leaseGrant:
		lc.granted = append(lc.granted, o.leaseID)
		if r, ok := a.resp.(*pb.LeaseGrantResponse); ok && a.state == attemptOK && a.err == nil && o.keep {
			lc.kept++
			wl.scheduleKeepAlive(lc, o.leaseID, r.TTL)
		}
	case leaseAttach:
		if a.state == attemptOK && a.err == nil {
			wl.learnLease(lc, o, a)
		}
	}
	wl.w.after(wl.lrng.dur(0, 2*wl.leaseThink), evClient, -1, func() { wl.nextLease(lc) })
}

// learnLease records the mod revision an attach saw, for the next
// compare-and-set.
func (wl *workload) learnLease(lc *leaseClient, o *op, a *attempt) {
	switch r := a.resp.(type) {
	case *pb.PutResponse:
		lc.modRev[o.key] = r.GetHeader().GetRevision()
	case *pb.TxnResponse:
		lc.modRev[o.key] = 0
		if kvs := r.Responses[len(r.Responses)-1].GetResponseRange().GetKvs(); len(kvs) == 1 {
			lc.modRev[o.key] = kvs[0].ModRevision
		}
	}
}

// scheduleKeepAlive sends the lease's next keepalive a third of its TTL
// from now, as clientv3's keepalive loop does.
func (wl *workload) scheduleKeepAlive(lc *leaseClient, id, ttl int64) {
	wl.w.after(time.Duration(ttl)*time.Second/3, evClient, -1, func() {
		if wl.w.phase != phaseSafety || len(wl.ops) >= opsMax {
			lc.kept--
			return
		}
		o := &op{id: len(wl.ops), client: lc.idx, kind: opLease, lease: leaseKeepAlive, leaseID: id, loop: true}
		wl.ops = append(wl.ops, o)
		wl.issue(o)
	})
}

// keepAliveRound ends one round of a keepalive loop: the loop goes on
// until the lease is gone, or the client stops keeping it alive.
func (wl *workload) keepAliveRound(lc *leaseClient, o *op, a *attempt) {
	gone := a.state == attemptOK && a.err != nil
	if gone || wl.lrng.chance(wl.o.Lease.StopPPM) {
		lc.kept--
		return
	}
	ttl := wl.o.Lease.TTLMax
	if r, ok := a.resp.(*pb.LeaseKeepAliveResponse); ok && a.state == attemptOK {
		ttl = r.TTL
	}
	wl.scheduleKeepAlive(lc, o.leaseID, max(ttl, leaseTTLMin))
}
