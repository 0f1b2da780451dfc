package engine

import (
	"testing"
	"testing/cryptotest"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/basaltdb/basalt/engine/mvcc"
)

// newLeaseCluster starts three members, raft's jitter drawn from seed,
// with member 1 elected and ticked once, so that it manages lease expiry.
func newLeaseCluster(t *testing.T, seed uint64) *cluster {
	t.Helper()
	cryptotest.SetGlobalRandom(t, seed)
	c := newCluster(t, 3)
	c.stabilize()
	if err := c.member(1).node.raw.Campaign(); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	c.tick(1)
	return c
}

// propose submits op through the current leader and lets the cluster
// apply it.
func (c *cluster) propose(op *pb.InternalRaftRequest) {
	c.t.Helper()
	if _, err := c.leader().node.Submit(Request{Op: op}); err != nil {
		c.t.Fatal(err)
	}
	c.stabilize()
}

// keyCount is how many members' views hold key.
func (c *cluster) keyCount(key string) int {
	c.t.Helper()
	n := 0
	for _, m := range c.members {
		res, err := m.view.Range([]byte(key), nil, mvcc.RangeOptions{CountOnly: true})
		if err != nil {
			c.t.Fatal(err)
		}
		n += int(res.Count)
	}
	return n
}

// TestLeaseDeposedLeaderNeverRevokes: a leader cut off from the others
// while a lease it granted runs out must not revoke it (etcd #15247, where
// an old leader's revokes reached the new leader after it stepped down):
// the new leader, which the client renews, keeps the lease and its key.
// Once renewals stop, the new leader revokes it everywhere.
func TestLeaseDeposedLeaderNeverRevokes(t *testing.T) {
	c := newLeaseCluster(t, 3)
	c.propose(&pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: 5, TTL: 3}})
	c.propose(&pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("k"), Value: []byte("v"), Lease: 5}})
	old := c.member(1)
	old.cut = true
	// The old leader ticks well past the lease's 30 ticks while the others
	// elect a leader that the client renews the lease on every second.
	for range 12 {
		c.tick(10)
		for _, m := range c.members[1:] {
			if st := m.node.Status(); st.Leader == m.id {
				if _, err := m.node.Renew(5); err != nil && err != ErrNotLeader {
					t.Fatalf("renewing on member %d: %v", m.id, err)
				}
			}
		}
	}
	old.cut = false
	c.tick(20)
	for range 3 {
		if _, err := c.leader().node.Renew(5); err != nil {
			t.Fatal(err)
		}
		c.tick(10)
	}
	if got := c.keyCount("k"); got != 3 {
		t.Fatalf("the leased key is on %d members, want 3", got)
	}
	if _, err := old.node.Renew(5); err != ErrNotLeader {
		t.Fatalf("the deposed leader renewed: %v", err)
	}
	// No more renewals: the lease goes within its TTL plus the retry slack.
	c.tick(31)
	if got := c.keyCount("k"); got != 0 {
		t.Fatalf("the expired lease's key is still on %d members", got)
	}
	for _, m := range c.members {
		if ids := m.node.Leases(); len(ids) != 0 {
			t.Fatalf("member %d still has leases %v", m.id, ids)
		}
	}
}

// TestLeaseCheckpointSurvivesLeaderChange: the remaining TTL the leader
// checkpointed is what the next leader counts from, not the whole TTL.
func TestLeaseCheckpointSurvivesLeaderChange(t *testing.T) {
	c := newLeaseCluster(t, 4)
	c.propose(&pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: 9, TTL: 600}})
	c.tick(3100) // past the 5 minute checkpoint
	c.member(1).cut = true
	c.tick(40)
	l := c.leader()
	if l.id == 1 {
		t.Fatal("the cut leader still leads")
	}
	st, err := l.node.LeaseTimeToLive(9, false)
	if err != nil {
		t.Fatal(err)
	}
	// 600s - 300s at the checkpoint, plus the 1s extension, less what the
	// new leader has counted since its promotion.
	if st.TTL < 295 || st.TTL > 300 {
		t.Fatalf("the new leader gives the lease %ds, want the checkpointed ~300s", st.TTL)
	}
}

// TestLeaseRenewWhileRevoking: once the leader has found a lease expired
// and proposed its revoke, a keepalive must not be answered with a TTL:
// the revoke commits regardless, and the client would count on a lease
// that is gone (found by the simulator, seed 1: the expiry moved on by
// the retry interval, so Renew took the lease for alive).
func TestLeaseRenewWhileRevoking(t *testing.T) {
	c := newLeaseCluster(t, 5)
	c.propose(&pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: 5, TTL: 2}})
	c.propose(&pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("k"), Value: []byte("v"), Lease: 5}})
	l := c.member(1)
	// The leader expires the lease 20 ticks after the grant; cut off, it
	// cannot commit the revoke it proposes, but leads for a while yet.
	c.tick(18)
	l.cut = true
	c.tick(2)
	if st := l.node.Status(); st.Leader != l.id {
		t.Fatalf("member 1 no longer leads (leader %d)", st.Leader)
	}
	if ttl, err := l.node.Renew(5); err != ErrLeaseNotFound {
		t.Fatalf("renewing a lease whose revoke is proposed gave ttl %d, %v; want %v", ttl, err, ErrLeaseNotFound)
	}
	if st, err := l.node.LeaseTimeToLive(5, false); err != nil || st.TTL != 0 {
		t.Fatalf("the TTL of a lease whose revoke is proposed is %d, %v; want 0", st.TTL, err)
	}
	l.cut = false
	c.tick(1)
	if got := c.keyCount("k"); got != 0 {
		t.Fatalf("the revoked lease's key is still on %d members", got)
	}
}
