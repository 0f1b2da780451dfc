package sim

import (
	"fmt"
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// The lease checker. A lease's expiry is the leader's, counted in its own
// ticks, so what a client may rely on is a bound in time:
//
//   - Never early. A lease must not be revoked by expiry (a revoke the
//     leader proposed, ID 0) before TTL - leaseEarlyMargin after the
//     sending of any grant or keepalive it acknowledged: the renewal
//     happened after the client sent it, on a leader whose leadership a
//     quorum confirmed after that (the read barrier). A leader elected
//     later had a vote from one of that quorum, given after its
//     confirmation, and gives every lease its TTL plus an election timeout
//     from its promotion; so no leader, old or new, counts less than TTL
//     from the sending, except for its tick granularity (one tick) and
//     clock drift (DriftPPM of the TTL and the tick). A keepalive answered
//     "not found" within the same bound, for a lease no client revoked, is
//     the same violation.
//   - Late only with a reason. After the last renewal, a lease must be
//     revoked within TTL + leaseLateBound when nothing disturbed the
//     cluster over that window (quiet): one election timeout (a new
//     leader's promotion extends every lease by it), one revoke retry (a
//     revoke proposal lost to a leader change is proposed again after it),
//     a tick of granularity, drift, and the time to commit. With faults,
//     expiry may be arbitrarily late (no leader, no quorum); the liveness
//     phase then requires every lease to be revoked once the core healed.
//
// Keepalives and TTLs are answered from the leader's memory, not the log,
// so the log-order oracle cannot check them; this checker does, against
// the lease lives the committed log gives.

// leaseGen is one life of a lease ID in the committed log: from the grant
// that created it to the revoke that ended it.
type leaseGen struct {
	id, ttl int64
	// grantIdx and grantAt are the grant's log index and when the oracle
	// first saw it committed; revokeIdx (0 while alive) and revokeAt the
	// revoke's.
	grantIdx, revokeIdx uint64
	grantAt, revokeAt   time.Duration
	// expired is set when the revoke was the leader's (expiry), not a
	// client's.
	expired bool
}

// aliveIn reports whether g overlaps the time window [from, to].
func (g *leaseGen) aliveIn(from, to time.Duration) bool {
	return g.grantAt <= to && (g.revokeIdx == 0 || g.revokeAt >= from)
}

// observeLease follows the lease lives through a committed request that
// succeeded; id is the request's ID, 0 for the leader's own.
func (c *checker) observeLease(i uint64, id uint64, req *pb.InternalRaftRequest, resp proto.Message) {
	switch {
	case req.LeaseGrant != nil:
		c.w.stats.Leases++
		r := resp.(*pb.LeaseGrantResponse)
		c.gens[r.ID] = append(c.gens[r.ID], &leaseGen{id: r.ID, ttl: r.TTL, grantIdx: i, grantAt: c.w.now})
	case req.LeaseRevoke != nil:
		gs := c.gens[req.LeaseRevoke.ID]
		g := gs[len(gs)-1]
		g.revokeIdx, g.revokeAt, g.expired = i, c.w.now, id == 0
		if g.expired {
			c.w.stats.Expired++
		}
	}
}

// renewed notes that a member renewed lease id now.
func (c *checker) renewed(id int64) { c.renewals[id] = append(c.renewals[id], c.w.now) }

// leaseEarlyMargin is how much less than ttl seconds after a renewal a
// leader may find the lease expired: the renewal falls between two ticks
// (one tick), and the leader's ticks may run fast (drift).
func (c *checker) leaseEarlyMargin(ttl int64) time.Duration {
	d := time.Duration(c.w.opts.Faults.DriftPPM)
	return tickInterval + (tickInterval+time.Duration(ttl)*time.Second)*d/ppmMax
}

// leasePromise is an acknowledged grant or keepalive: the lease lives
// until at least sent + ttl - leaseEarlyMargin(ttl).
type leasePromise struct {
	a   *attempt
	ttl int64
}

func (c *checker) until(p leasePromise) time.Duration {
	return p.a.sent + time.Duration(p.ttl)*time.Second - c.leaseEarlyMargin(p.ttl)
}

// checkLeases checks the answers the log-order oracle cannot (keepalives,
// TTLs) and that no lease expired early, or late in a quiet window.
func (c *checker) checkLeases() {
	promises := map[*leaseGen][]leasePromise{}
	var notFound []*attempt
	for _, o := range c.w.work.ops {
		if o.kind != opLease {
			continue
		}
		for _, a := range o.attempts {
			if a.state != attemptOK {
				continue
			}
			switch o.lease {
			case leaseGrant:
				if a.err != nil {
					continue
				}
				mr := c.byID[uint64(a.id)]
				for _, g := range c.gens[o.leaseID] {
					if g.grantIdx == mr.index {
						promises[g] = append(promises[g], leasePromise{a, g.ttl})
					}
				}
			case leaseKeepAlive:
				if a.err != nil {
					notFound = append(notFound, a)
					continue
				}
				g := c.keepAliveGen(a)
				if c.w.failure != nil {
					return
				}
				if g != nil {
					promises[g] = append(promises[g], leasePromise{a, g.ttl})
				}
			case leaseTTL:
				if c.checkTTL(a); c.w.failure != nil {
					return
				}
			}
		}
	}
	ids := make([]int64, 0, len(c.gens))
	for id := range c.gens {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		for _, g := range c.gens[id] {
			if !g.expired {
				continue
			}
			for _, p := range promises[g] {
				if u := c.until(p); g.revokeAt < u {
					c.w.fail("lease expiry", fmt.Sprintf("lease %d (ttl %ds, granted at entry %d) was revoked by expiry at entry %d at %v; %s sent at %v to member %d was answered %s at %v: it must live until %v",
						id, g.ttl, g.grantIdx, g.revokeIdx, g.revokeAt, describeOp(p.a.op), p.a.sent, p.a.member+1, describeAnswer(p.a), p.a.answered, u))
					return
				}
			}
		}
	}
	for _, a := range notFound {
		c.checkNotFound(a, promises)
		if c.w.failure != nil {
			return
		}
	}
	c.checkLate()
}

// keepAliveGen returns the life of the lease an acknowledged keepalive
// renewed, nil when more than one may have been: an ID granted again
// after a revoke.
func (c *checker) keepAliveGen(a *attempt) *leaseGen {
	o := a.op
	r := a.resp.(*pb.LeaseKeepAliveResponse)
	var cands []*leaseGen
	for _, g := range c.gens[o.leaseID] {
		if g.aliveIn(a.sent, a.answered) {
			cands = append(cands, g)
		}
	}
	ok := false
	for _, g := range cands {
		ok = ok || g.ttl == r.TTL
	}
	if !ok || r.ID != o.leaseID {
		c.w.fail("lease keepalive", fmt.Sprintf("%s sent at %v was answered %s by member %d at %v; the committed log has %d lives of the lease then",
			describeOp(o), a.sent, describeAnswer(a), a.member+1, a.answered, len(cands)))
		return nil
	}
	if len(cands) != 1 {
		return nil
	}
	return cands[0]
}

// checkNotFound fails a keepalive answered "not found" while an earlier
// acknowledged grant or keepalive promised the lease alive, unless a
// client revoked it.
func (c *checker) checkNotFound(a *attempt, promises map[*leaseGen][]leasePromise) {
	for _, g := range c.gens[a.op.leaseID] {
		if !g.expired && g.revokeIdx != 0 && g.revokeAt <= a.answered {
			continue
		}
		for _, p := range promises[g] {
			if p.a.answered <= a.sent && a.answered < c.until(p) {
				c.w.fail("lease expiry", fmt.Sprintf("%s sent at %v to member %d was answered %s at %v, but %s sent at %v was answered %s at %v: the lease must live until %v",
					describeOp(a.op), a.sent, a.member+1, describeAnswer(a), a.answered, describeOp(p.a.op), p.a.sent, describeAnswer(p.a), p.a.answered, c.until(p)))
				return
			}
		}
	}
}

// checkTTL checks a TimeToLive answer against the lease lives at the
// revision it was served at: a lease found must be alive at one of the
// log indexes with that revision, with its granted TTL and attached keys;
// one not found must be dead at one of them.
func (c *checker) checkTTL(a *attempt) {
	o := a.op
	r := a.resp.(*pb.LeaseTimeToLiveResponse)
	rev := r.GetHeader().GetRevision()
	// The log indexes [lo, hi] end at revision rev; index 0, the empty
	// log, is at revision 1.
	p, found := slices.BinarySearch(c.revAt, rev)
	q := p
	for q < len(c.revAt) && c.revAt[q] == rev {
		q++
	}
	lo, hi := uint64(p+1), uint64(q)
	if rev == 1 {
		lo, found = 0, true
	}
	ok := found
	if r.TTL == -1 {
		for _, g := range c.gens[o.leaseID] {
			if g.grantIdx <= lo && (g.revokeIdx == 0 || g.revokeIdx > hi) {
				ok = false // alive over the whole range
			}
		}
	} else {
		alive := false
		for _, g := range c.gens[o.leaseID] {
			if g.grantIdx <= hi && (g.revokeIdx == 0 || g.revokeIdx > lo) && r.GrantedTTL == g.ttl && r.TTL >= 0 && r.TTL <= g.ttl {
				alive = true
			}
		}
		ok = ok && alive
	}
	if ok && r.TTL != -1 && o.withKeys {
		want := c.model.attached(o.leaseID, rev)
		got := make([]string, len(r.Keys))
		for i, k := range r.Keys {
			got[i] = string(k)
		}
		ok = slices.Equal(want, got)
	}
	if !ok || r.ID != o.leaseID {
		c.w.fail("lease ttl", fmt.Sprintf("%s sent at %v was answered %s by member %d at %v; the committed log has the lease's keys %q at revision %d",
			describeOp(o), a.sent, describeAnswer(a), a.member+1, a.answered, c.model.attached(o.leaseID, rev), rev))
	}
}

// leaseLateMargin is what leaseLateBound leaves out, for a lease of ttl
// seconds in this run: the tick a renewal may fall short of, drift, and
// the time a quiet cluster takes to commit the revoke (a round trip of
// the slowest message delays, and the fsyncs on the way: one the leader
// may be waiting for when it proposes, its own and a follower's, and
// one more for the follower's ack).
func (c *checker) leaseLateMargin(ttl int64) time.Duration {
	o := c.w.opts
	d := time.Duration(o.Faults.DriftPPM)
	commit := 2*(o.Net.DelayMin+10*o.Net.DelayMean) + 4*10*o.Disk.SyncMean
	return tickInterval + (tickInterval+time.Duration(ttl)*time.Second)*d/ppmMax + commit
}

// checkLate requires every lease to be revoked within its TTL plus
// leaseLateBound and leaseLateMargin after its last renewal (or its
// grant), when nothing disturbed the cluster over that window and it ended
// in the safety phase.
func (c *checker) checkLate() {
	ids := make([]int64, 0, len(c.gens))
	for id := range c.gens {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		for _, g := range c.gens[id] {
			base := g.grantAt
			for _, r := range c.renewals[id] {
				if r >= base && (g.revokeIdx == 0 || r <= g.revokeAt) {
					base = r
				}
			}
			deadline := base + time.Duration(g.ttl)*time.Second + leaseLateBound + c.leaseLateMargin(g.ttl)
			if deadline >= c.w.opts.Safety || !c.w.quiet(base, deadline) {
				continue
			}
			if c.w.stats.Quiet++; g.revokeIdx != 0 && g.revokeAt <= deadline {
				continue
			}
			revoked := "not revoked"
			if g.revokeIdx != 0 {
				revoked = fmt.Sprintf("revoked at entry %d at %v", g.revokeIdx, g.revokeAt)
			}
			c.w.fail("lease expiry", fmt.Sprintf("lease %d (ttl %ds, granted at entry %d at %v), last renewed at %v, was %s: in a quiet cluster it must be revoked by %v",
				id, g.ttl, g.grantIdx, g.grantAt, base, revoked, deadline))
			return
		}
	}
}

func describeLeaseOp(o *op) string {
	switch o.lease {
	case leaseGrant:
		g := o.write.LeaseGrant
		return fmt.Sprintf("grant %d ttl=%d keep=%t", g.ID, g.TTL, o.keep)
	case leaseAttach:
		if t := o.write.Txn; t != nil {
			return fmt.Sprintf("txn if mod(%s)==%d put %s lease=%d", t.Compare[0].Key, t.Compare[0].GetModRevision(), t.Success[0].GetRequestPut().Value, o.leaseID)
		}
		return fmt.Sprintf("put %s=%s lease=%d", o.write.Put.Key, o.write.Put.Value, o.leaseID)
	case leaseKeepAlive:
		return fmt.Sprintf("keepalive %d loop=%t", o.leaseID, o.loop)
	case leaseRevoke:
		return fmt.Sprintf("revoke %d", o.leaseID)
	}
	return fmt.Sprintf("ttl %d keys=%t", o.leaseID, o.withKeys)
}
