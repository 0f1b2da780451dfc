package engine

import (
	"fmt"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/basaltdb/basalt/diskio"
)

// submitAll submits ops together and lets them commit in one Ready, as the
// server's loop batches what clients send at once.
func (h *harness) submitAll(ops []*pb.InternalRaftRequest) {
	h.t.Helper()
	for _, op := range ops {
		if _, err := h.node.Submit(Request{Op: op}); err != nil {
			h.t.Fatal(err)
		}
	}
	h.stabilize()
	clear(h.answers)
}

// grantLeases grants leases [1, n] of ttl seconds, each with one key.
func (h *harness) grantLeases(n int, ttl int64) {
	h.t.Helper()
	const batch = 1000
	for lo := 1; lo <= n; lo += batch {
		var grants, puts []*pb.InternalRaftRequest
		for id := lo; id < lo+batch && id <= n; id++ {
			grants = append(grants, &pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: int64(id), TTL: ttl}})
			puts = append(puts, &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: fmt.Appendf(nil, "lease/%08d", id), Value: []byte("v"), Lease: int64(id)}})
		}
		h.submitAll(grants)
		h.submitAll(puts)
	}
}

// BenchmarkLeaseGrant grants leases through raft, apply and the simulated
// disk, 1000 to a Ready.
func BenchmarkLeaseGrant(b *testing.B) {
	h := &harness{t: b, disk: diskio.NewSim()}
	h.start()
	id := int64(0)
	ops := make([]*pb.InternalRaftRequest, 1000)
	b.ResetTimer()
	for b.Loop() {
		for i := range ops {
			id++
			ops[i] = &pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: id, TTL: 60}}
		}
		h.submitAll(ops)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(id), "ns/grant")
}

// BenchmarkLeaseRenew renews leases on the leader, as keepalives do: from
// memory, without raft.
func BenchmarkLeaseRenew(b *testing.B) {
	const leases = 100_000
	h := &harness{t: b, disk: diskio.NewSim()}
	h.start()
	h.grantLeases(leases, 60)
	i := 0
	b.ResetTimer()
	for b.Loop() {
		if _, err := h.node.Renew(int64(i%leases + 1)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkLeaseExpiryStorm: 100k leases, each with a key, expire at the
// same tick. The leader revokes them at etcd's 1000 a second (100 a tick)
// while a client keeps writing one key a tick; the metrics are the slowest
// tick (its revokes applied and the write answered) and how many ticks
// the storm lasts.
func BenchmarkLeaseExpiryStorm(b *testing.B) {
	const leases = 100_000
	for b.Loop() {
		b.StopTimer()
		// Snapshots are off: the harness writes them on the loop, a server
		// does not.
		h := &harness{t: b, disk: diskio.NewSim(), snapshotEntries: 1 << 40}
		h.start()
		h.grantLeases(leases, 10)
		b.StartTimer()
		var took []time.Duration
		ticks := 0
		for len(h.node.leases.leases) > 0 {
			start := time.Now()
			h.node.Tick()
			if r := h.do(Request{Op: putOp("client", fmt.Sprint(ticks))}); r.Err != nil {
				b.Fatal(r.Err)
			}
			took = append(took, time.Since(start))
			ticks++
			if ticks > 100_000 {
				b.Fatal("the leases never all expired")
			}
		}
		slices.Sort(took)
		b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "ms/p99-tick")
		b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "ms/slowest-tick")
		b.ReportMetric(float64(ticks), "ticks")
	}
}

// BenchmarkLeasePromote is a leader change with a million leases: the
// promotion and the new leader's first look for expired leases cost the
// same as with none (etcd #9496: an O(n) promotion timed out elections).
func BenchmarkLeasePromote(b *testing.B) {
	for _, leases := range []int{0, 1_000_000} {
		b.Run(fmt.Sprintf("leases=%d", leases), func(b *testing.B) {
			ls := newLessor(&Config{ElectionTicks: 10})
			for id := range leases {
				if _, err := ls.grant(int64(id+1), int64(60+id%600), 0); err != nil {
					b.Fatal(err)
				}
			}
			now := uint64(0)
			for b.Loop() {
				now++
				ls.promote(now)
				if ids := ls.expired(now+1, 100); len(ids) != 0 {
					b.Fatalf("%d leases expired at once", len(ids))
				}
				ls.demote()
			}
		})
	}
}
