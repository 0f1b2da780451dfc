package engine

import (
	"cmp"
	"container/heap"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"slices"
	"time"

	"github.com/tidwall/btree"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/raft/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/engine/mvcc"
)

// LeaseTTLMax is the largest TTL, in seconds, a lease may be granted
// (etcd's MaxLeaseTTL).
const LeaseTTLMax = 9000000000

// Errors of lease requests.
var (
	// ErrLeaseExist is returned when granting a lease whose ID is taken.
	ErrLeaseExist = errors.New("engine: lease already exists")
	// ErrLeaseTTLTooLarge is returned when granting a TTL above LeaseTTLMax.
	ErrLeaseTTLTooLarge = errors.New("engine: too large lease TTL")
	// ErrNotLeader is returned by what only the leader serves (renewing a
	// lease, its remaining TTL) when this member is not the leader, or has
	// not yet applied the first entry of its term.
	ErrNotLeader = errors.New("engine: not the leader")
)

// Leases are replicated state: granting, revoking and checkpointing go
// through raft and apply alike on every member. Expiry is the leader's
// alone, counted in ticks, as etcd's primary lessor counts it in wall time:
// the leader proposes a revoke for each lease it finds expired, and serves
// renewals from memory (Renew). A new leader gives every lease its
// remaining TTL afresh from the moment it applies the first entry of its
// term, plus an election timeout (etcd's Promote). The remaining TTL is the
// last checkpoint the previous leaders replicated, else the full TTL: unlike
// etcd 3.7, where checkpoints are behind a feature gate that is off, basalt
// always checkpoints, so that repeated leader changes cannot keep a lease
// alive forever (etcd #9395).
//
// Promotion does no work per lease (etcd #9496: an O(n) promotion under a
// lock timed out elections with millions of leases). A lease the leader
// has not touched in its term (not granted, renewed, checkpointed or found
// expired) expires at promotedAt + extend + its promotion TTL; byTTL keeps
// leases in that order, on every member, so the leader finds the untouched
// leases that expire by walking byTTL from a cursor, and those it touched
// in its expiries heap.

// leaseRecord is a lease's replicated part, the key of byTTL.
type leaseRecord struct {
	id int64
	// ttl is the granted TTL in seconds, at least the minimum TTL.
	ttl int64
	// remaining is the remaining TTL in seconds the leader last
	// checkpointed; 0 when unset.
	remaining int64
}

// promotionTTL is the TTL, in seconds, a new leader gives the lease.
func (r leaseRecord) promotionTTL() int64 {
	if r.remaining > 0 {
		return r.remaining
	}
	return r.ttl
}

func leaseRecordLess(a, b leaseRecord) bool {
	if c := cmp.Compare(a.promotionTTL(), b.promotionTTL()); c != 0 {
		return c < 0
	}
	return a.id < b.id
}

// lease is one granted lease.
type lease struct {
	leaseRecord
	// keys are the keys attached to the lease.
	keys map[string]struct{}

	// The leader's view, valid only while epoch == lessor.epoch.
	epoch uint64
	// expiry is the tick at which the lease expires.
	expiry uint64
	// heapIndex is the lease's place in lessor.expiries.
	heapIndex int
	// checkpointEpoch is lessor.epoch when a checkpoint of the lease is
	// scheduled in lessor.checkpoints.
	checkpointEpoch uint64
	// revokeEpoch is lessor.epoch when the leader found the lease expired
	// and proposed its revoke: from then on no renewal revives it (etcd's
	// Renew waits for that revoke), although its expiry moves on by the
	// retry interval.
	revokeEpoch uint64
	// revokeLoggedEpoch is lessor.epoch when raft took the revoke this
	// leader proposed into its log: it commits while this member leads, and
	// proposing it again could revoke a lease granted anew under the same ID
	// between the two revokes (the simulator found it: seed 5100, a revoke
	// that waited out a slow disk). Only a dropped proposal is retried.
	revokeLoggedEpoch uint64
}

// lessor holds the leases of a member.
type lessor struct {
	// tick is how long a tick lasts.
	tick time.Duration
	// minTTL is the smallest TTL granted, in seconds.
	minTTL int64
	// extendTicks is what a new leader adds to every lease's remaining TTL.
	extendTicks uint64
	// revokesPerTick, checkpointsPerTick: etcd's rate limits per tick.
	revokesPerTick     int
	checkpointsPerTick int

	// leases are the granted leases by ID.
	// Invariant: byTTL holds exactly leases' records.
	leases map[int64]*lease
	byTTL  *btree.BTreeG[leaseRecord]
	// keyLease is the lease each attached key is attached to.
	// Invariant: keyLease[k] == id iff k is in leases[id].keys.
	keyLease map[string]int64

	// primary is set from the moment the leader applies the first entry of
	// its term until it is no longer leader.
	primary bool
	// epoch numbers promotions; a lease whose epoch differs is untouched.
	epoch uint64
	// promotedAt is the tick of the promotion.
	promotedAt uint64
	// expiries are the touched leases by expiry.
	expiries expiryHeap
	// expiryCursor is where the walk over byTTL for untouched expired
	// leases resumes. Invariant: every lease before it is touched.
	expiryCursor leaseRecord
	// checkpoints are the scheduled checkpoints of touched leases.
	checkpoints checkpointHeap
	// checkpointCursor is where the walk over the untouched leases due for
	// their first checkpoint of the term resumes.
	checkpointCursor leaseRecord
}

func newLessor(cfg *Config) *lessor {
	tick := cfg.TickDuration
	if tick <= 0 {
		tick = tickDurationDefault
	}
	minTTL := time.Duration(3*cfg.ElectionTicks/2) * tick
	ls := &lessor{
		tick:               tick,
		minTTL:             int64(math.Ceil(minTTL.Seconds())),
		extendTicks:        uint64(cfg.ElectionTicks),
		revokesPerTick:     perTick(leaseRevokesPerSecond, tick),
		checkpointsPerTick: perTick(leaseCheckpointsPerSecond, tick),
		leases:             make(map[int64]*lease),
		byTTL:              btree.NewBTreeGOptions(leaseRecordLess, btree.Options{NoLocks: true}),
		keyLease:           make(map[string]int64),
	}
	return ls
}

// perTick spreads a rate per second over ticks, at least one a tick.
func perTick(perSecond int, tick time.Duration) int {
	return max(1, int(int64(perSecond)*int64(tick)/int64(time.Second)))
}

// ticksFor is how many ticks last at least seconds.
func (ls *lessor) ticksFor(seconds int64) uint64 {
	ns := seconds * int64(time.Second) // fits: seconds <= LeaseTTLMax
	return uint64((ns + int64(ls.tick) - 1) / int64(ls.tick))
}

// remainingNanos is the time from now until expiry.
func (ls *lessor) remainingNanos(expiry, now uint64) int64 {
	if expiry <= now {
		return 0
	}
	return int64(expiry-now) * int64(ls.tick)
}

// expiryOf is the tick at which the leader has l expire.
func (ls *lessor) expiryOf(l *lease) uint64 {
	if l.epoch == ls.epoch {
		return l.expiry
	}
	return ls.promotedAt + ls.extendTicks + ls.ticksFor(l.promotionTTL())
}

// grant adds a lease; it fails as etcd's Grant does.
func (ls *lessor) grant(id, ttl int64, now uint64) (*lease, error) {
	switch {
	case id == 0:
		return nil, ErrLeaseNotFound
	case ttl > LeaseTTLMax:
		return nil, ErrLeaseTTLTooLarge
	case ls.leases[id] != nil:
		return nil, ErrLeaseExist
	}
	l := &lease{leaseRecord: leaseRecord{id: id, ttl: max(ttl, ls.minTTL)}, keys: make(map[string]struct{}), heapIndex: -1}
	ls.leases[id] = l
	ls.byTTL.Set(l.leaseRecord)
	if ls.primary {
		ls.touch(l, now+ls.ticksFor(l.ttl), now)
	}
	return l, nil
}

// remove drops a revoked lease, whose keys are deleted.
func (ls *lessor) remove(l *lease) {
	assert(len(l.keys) == 0, "engine: lease %d revoked with %d keys attached", l.id, len(l.keys))
	delete(ls.leases, l.id)
	_, found := ls.byTTL.Delete(l.leaseRecord)
	assert(found, "engine: lease %d missing from byTTL", l.id)
	if ls.primary && l.epoch == ls.epoch {
		heap.Remove(&ls.expiries, l.heapIndex)
	}
}

// checkpoint records the remaining TTL the leader replicated.
func (ls *lessor) checkpoint(id, remaining int64, now uint64) {
	l := ls.leases[id]
	if l == nil {
		return
	}
	if ls.primary && l.epoch != ls.epoch {
		// A checkpoint changes the TTL the next leader grants, not this
		// leader's expiry.
		ls.touch(l, ls.expiryOf(l), now)
	}
	ls.byTTL.Delete(l.leaseRecord)
	l.remaining = remaining
	ls.byTTL.Set(l.leaseRecord)
	if ls.primary {
		ls.scheduleCheckpoint(l, now)
	}
}

// revoking reports whether this leader has proposed l's revoke.
func (ls *lessor) revoking(l *lease) bool { return ls.primary && l.revokeEpoch == ls.epoch }

// touch makes l's expiry explicit for this leader.
func (ls *lessor) touch(l *lease, expiry, now uint64) {
	l.expiry = expiry
	if l.epoch == ls.epoch {
		heap.Fix(&ls.expiries, l.heapIndex)
	} else {
		l.epoch = ls.epoch
		heap.Push(&ls.expiries, l)
	}
	ls.scheduleCheckpoint(l, now)
}

// scheduleCheckpoint schedules l's next checkpoint a checkpoint interval
// from now if l outlives it, as etcd does.
func (ls *lessor) scheduleCheckpoint(l *lease, now uint64) {
	if l.checkpointEpoch == ls.epoch || ls.remainingNanos(ls.expiryOf(l), now) <= leaseCheckpointInterval.Nanoseconds() {
		return
	}
	l.checkpointEpoch = ls.epoch
	heap.Push(&ls.checkpoints, scheduledCheckpoint{due: now + ls.ticksFor(int64(leaseCheckpointInterval/time.Second)), l: l})
}

// promote makes this member the primary lessor from tick now.
func (ls *lessor) promote(now uint64) {
	ls.primary = true
	ls.epoch++
	ls.promotedAt = now
	ls.expiries = nil
	ls.checkpoints = nil
	ls.expiryCursor = leaseRecord{id: math.MinInt64}
	ls.checkpointCursor = leaseRecord{ttl: int64(leaseCheckpointInterval/time.Second) + 1, id: math.MinInt64}
}

// demote stops this member acting as the primary lessor.
func (ls *lessor) demote() {
	ls.primary = false
	ls.epoch++
	ls.expiries = nil
	ls.checkpoints = nil
}

// expired returns up to limit leases expired at now, oldest first, and
// has each wait the retry interval before it is found again.
func (ls *lessor) expired(now uint64, limit int) []int64 {
	var ids []int64
	retry := now + ls.ticksFor(int64(leaseExpiredRetryInterval/time.Second))
	for len(ids) < limit && len(ls.expiries) > 0 && ls.expiries[0].expiry <= now {
		l := ls.expiries[0]
		ls.touch(l, retry, now)
		if l.revokeLoggedEpoch == ls.epoch {
			continue
		}
		ids = append(ids, l.id)
		l.revokeEpoch = ls.epoch
	}
	ls.walk(&ls.expiryCursor, func(l *lease) bool {
		if len(ids) >= limit || ls.expiryOf(l) > now {
			return false
		}
		ids = append(ids, l.id)
		ls.touch(l, retry, now)
		l.revokeEpoch = ls.epoch
		return true
	})
	return ids
}

// walk visits the untouched leases after cursor in byTTL order while fn
// returns true, moving the cursor past each lease fn accepts and past
// touched ones, at most leaseWalkPerTickMax leases. fn must not change
// byTTL.
func (ls *lessor) walk(cursor *leaseRecord, fn func(*lease) bool) {
	visited := 0
	ls.byTTL.Ascend(*cursor, func(r leaseRecord) bool {
		if r == *cursor {
			return true
		}
		if visited++; visited > leaseWalkPerTickMax {
			return false
		}
		if l := ls.leases[r.id]; l.epoch != ls.epoch && !fn(l) {
			return false
		}
		*cursor = r
		return true
	})
}

// dueCheckpoints returns the checkpoints due at now, at most limit.
func (ls *lessor) dueCheckpoints(now uint64, limit int) []*pb.LeaseCheckpoint {
	var cps []*pb.LeaseCheckpoint
	add := func(l *lease) {
		rem := ls.remainingNanos(ls.expiryOf(l), now)
		secs := (rem + int64(time.Second) - 1) / int64(time.Second)
		if rem > 0 && secs < l.ttl {
			cps = append(cps, &pb.LeaseCheckpoint{ID: l.id, Remaining_TTL: secs})
		}
	}
	for len(cps) < limit && len(ls.checkpoints) > 0 && ls.checkpoints[0].due <= now {
		c := heap.Pop(&ls.checkpoints).(scheduledCheckpoint)
		if ls.leases[c.l.id] != c.l || c.l.checkpointEpoch != ls.epoch {
			continue
		}
		c.l.checkpointEpoch = 0
		add(c.l)
	}
	if now >= ls.promotedAt+ls.ticksFor(int64(leaseCheckpointInterval/time.Second)) {
		ls.walk(&ls.checkpointCursor, func(l *lease) bool {
			if len(cps) >= limit {
				return false
			}
			ls.touch(l, ls.expiryOf(l), now)
			add(l)
			return true
		})
	}
	return cps
}

// bytes is what the quota counts for the member's state: the store's
// bytes, and etcd's quota cost for each lease, which etcd's database holds
// as it holds keys.
func (n *Node) bytes() int64 {
	return n.store.Bytes() + int64(len(n.leases.leases))*leaseOverheadBytes
}

// status reports a lease as the leader sees it at now.
func (ls *lessor) status(l *lease, now uint64, withKeys bool) LeaseStatus {
	st := LeaseStatus{ID: l.id, GrantedTTL: l.ttl}
	// Like etcd's, the remaining time is truncated to seconds, and a lease
	// checked the instant it is granted has a little less than its TTL.
	if rem := ls.remainingNanos(ls.expiryOf(l), now); rem > 0 && !ls.revoking(l) {
		st.TTL = (rem - 1) / int64(time.Second)
	}
	if withKeys {
		st.Keys = sortedKeys(l.keys)
	}
	return st
}

func sortedKeys(set map[string]struct{}) [][]byte {
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = []byte(k)
	}
	return out
}

// track attaches and detaches the keys a write changed: a put moves its
// key to the put's lease (or to none), a delete detaches it.
func (ls *lessor) track(events []*mvccpb.Event) {
	for _, ev := range events {
		var id int64
		if ev.Type == mvccpb.Event_PUT {
			id = ev.Kv.Lease
		}
		old, had := ls.keyLease[string(ev.Kv.Key)]
		if had && old == id {
			continue
		}
		key := string(ev.Kv.Key)
		if had {
			delete(ls.leases[old].keys, key)
			delete(ls.keyLease, key)
		}
		if id != 0 {
			l := ls.leases[id]
			assert(l != nil, "engine: key %q attached to lease %d that does not exist", key, id)
			l.keys[key] = struct{}{}
			ls.keyLease[key] = id
		}
	}
}

// LeaseStatus is a lease as the leader sees it.
type LeaseStatus struct {
	ID int64
	// TTL is the remaining time in whole seconds; GrantedTTL the TTL.
	TTL, GrantedTTL int64
	// Keys are the attached keys, sorted, when asked for.
	Keys [][]byte
}

// Renew renews lease id on the leader, as a keepalive does, and returns
// its TTL. It fails with ErrNotLeader on any other member, and with
// ErrLeaseNotFound for a lease that is unknown or expired (its revoke is
// on its way: a renewal never revives it). The host calls it between
// Ready cycles; renewals do not go through raft, but one that clears a
// checkpointed remaining TTL proposes that checkpoint.
func (n *Node) Renew(id int64) (int64, error) {
	ls := n.leases
	if !n.isPrimary() {
		return -1, ErrNotLeader
	}
	l := ls.leases[id]
	if l == nil || ls.expiryOf(l) <= n.ticks || ls.revoking(l) {
		return -1, ErrLeaseNotFound
	}
	if l.remaining > 0 {
		n.proposeInternal(&pb.InternalRaftRequest{LeaseCheckpoint: &pb.LeaseCheckpointRequest{
			Checkpoints: []*pb.LeaseCheckpoint{{ID: id}},
		}})
	}
	ls.touch(l, n.ticks+ls.ticksFor(l.ttl), n.ticks)
	return l.ttl, nil
}

// LeaseTimeToLive returns lease id as the leader sees it, with its keys
// if withKeys: ErrNotLeader on any other member, ErrLeaseNotFound if it
// does not exist.
func (n *Node) LeaseTimeToLive(id int64, withKeys bool) (LeaseStatus, error) {
	if !n.isPrimary() {
		return LeaseStatus{}, ErrNotLeader
	}
	l := n.leases.leases[id]
	if l == nil {
		return LeaseStatus{}, ErrLeaseNotFound
	}
	return n.leases.status(l, n.ticks, withKeys), nil
}

// Leases returns the IDs of the granted leases, ascending.
func (n *Node) Leases() []int64 {
	ids := make([]int64, 0, len(n.leases.leases))
	for id := range n.leases.leases {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// isPrimary reports whether this member manages lease expiry: it has
// been promoted and raft still has it leader.
func (n *Node) isPrimary() bool {
	if !n.leases.primary {
		return false
	}
	if n.raw.BasicStatus().RaftState != raft.StateLeader {
		n.leases.demote()
		return false
	}
	return true
}

// maybePromote promotes the lessor when the leader applies the empty
// entry of its own term, as etcd does: by then it has applied every
// entry of the terms before.
func (n *Node) maybePromote(term uint64) {
	st := n.raw.BasicStatus()
	if st.RaftState == raft.StateLeader && st.GetTerm() == term {
		n.leases.promote(n.ticks)
	}
}

// tickLeases proposes revokes of expired leases and due checkpoints, at
// etcd's rates; only the leader does.
func (n *Node) tickLeases() {
	if !n.isPrimary() {
		return
	}
	for _, id := range n.leases.expired(n.ticks, n.leases.revokesPerTick) {
		if n.proposeInternal(&pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}}) {
			n.leases.leases[id].revokeLoggedEpoch = n.leases.epoch
		}
	}
	if cps := n.leases.dueCheckpoints(n.ticks, n.leases.checkpointsPerTick); len(cps) > 0 {
		for i := 0; i < len(cps); i += leaseCheckpointBatchMax {
			batch := cps[i:min(len(cps), i+leaseCheckpointBatchMax)]
			n.proposeInternal(&pb.InternalRaftRequest{LeaseCheckpoint: &pb.LeaseCheckpointRequest{Checkpoints: batch}})
		}
	}
}

// proposeInternal proposes a request of the member's own, which no client
// waits for, and reports whether raft took it. A dropped proposal is
// retried by the mechanism that made it (an expired lease is found again
// after the retry interval).
func (n *Node) proposeInternal(op *pb.InternalRaftRequest) bool {
	data, err := proto.Marshal(op)
	assert(err == nil, "engine: member %x cannot encode %v: %v", n.cfg.ID, op, err)
	if err := n.raw.Propose(data); err != nil {
		n.log.Debug("internal proposal dropped", zap.Error(err))
		return false
	}
	return true
}

func (n *Node) applyLeaseGrant(r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	l, err := n.leases.grant(r.ID, r.TTL, n.ticks)
	if err != nil {
		return nil, err
	}
	return &pb.LeaseGrantResponse{Header: &pb.ResponseHeader{Revision: n.store.Rev()}, ID: l.id, TTL: l.ttl}, nil
}

// applyLeaseRevoke deletes the lease's keys, in key order, in one
// revision, then the lease.
func (n *Node) applyLeaseRevoke(r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	l := n.leases.leases[r.ID]
	if l == nil {
		return nil, ErrLeaseNotFound
	}
	keys := sortedKeys(l.keys)
	n.write(func(t *mvcc.Txn) (proto.Message, error) {
		for _, k := range keys {
			t.DeleteRange(k, nil)
		}
		return nil, nil
	})
	n.leases.remove(l)
	return &pb.LeaseRevokeResponse{Header: &pb.ResponseHeader{Revision: n.store.Rev()}}, nil
}

func (n *Node) applyLeaseCheckpoint(r *pb.LeaseCheckpointRequest) *pb.LeaseCheckpointResponse {
	for _, c := range r.Checkpoints {
		n.leases.checkpoint(c.ID, c.Remaining_TTL, n.ticks)
	}
	return &pb.LeaseCheckpointResponse{Header: &pb.ResponseHeader{Revision: n.store.Rev()}}
}

// leaseRecords is the immutable copy of the leases a snapshot job writes.
type leaseRecords = *btree.BTreeG[leaseRecord]

// restore rebuilds the leases from a snapshot's records and attaches the
// store's keys to them.
func (ls *lessor) restore(records []leaseRecord, store *mvcc.Store) error {
	for _, r := range records {
		r.ttl = max(r.ttl, ls.minTTL)
		l := &lease{leaseRecord: r, keys: make(map[string]struct{}), heapIndex: -1}
		ls.leases[r.id] = l
		ls.byTTL.Set(r)
	}
	res, err := store.View().Range([]byte{0}, []byte{0}, mvcc.RangeOptions{KeysOnly: true})
	if err != nil {
		return err
	}
	for _, kv := range res.KVs {
		if kv.Lease == 0 {
			continue
		}
		l := ls.leases[kv.Lease]
		if l == nil {
			return snapCorrupt("key %q attached to lease %d that does not exist", kv.Key, kv.Lease)
		}
		l.keys[string(kv.Key)] = struct{}{}
		ls.keyLease[string(kv.Key)] = kv.Lease
	}
	return nil
}

// writeLeases writes the leases section's payload: a count, then each
// lease's ID, TTL and checkpointed remaining TTL, by ID.
func writeLeases(w io.Writer, records leaseRecords) error {
	rs := make([]leaseRecord, 0, records.Len())
	records.Scan(func(r leaseRecord) bool {
		rs = append(rs, r)
		return true
	})
	slices.SortFunc(rs, func(a, b leaseRecord) int { return cmp.Compare(a.id, b.id) })
	b := binary.LittleEndian.AppendUint64(make([]byte, 0, 8+24*len(rs)), uint64(len(rs)))
	for _, r := range rs {
		b = binary.LittleEndian.AppendUint64(b, uint64(r.id))
		b = binary.LittleEndian.AppendUint64(b, uint64(r.ttl))
		b = binary.LittleEndian.AppendUint64(b, uint64(r.remaining))
	}
	_, err := w.Write(b)
	return err
}

func readLeases(r io.Reader) ([]leaseRecord, error) {
	var b [24]byte
	if err := readFull(r, b[:8], "lease count"); err != nil {
		return nil, err
	}
	count := binary.LittleEndian.Uint64(b[:8])
	if count > leasesMax {
		return nil, snapCorrupt("%d leases, at most %d", count, leasesMax)
	}
	rs := make([]leaseRecord, 0, count)
	for range count {
		if err := readFull(r, b[:], "lease"); err != nil {
			return nil, err
		}
		rec := leaseRecord{
			id:        int64(binary.LittleEndian.Uint64(b[:8])),
			ttl:       int64(binary.LittleEndian.Uint64(b[8:16])),
			remaining: int64(binary.LittleEndian.Uint64(b[16:])),
		}
		if rec.id == 0 || rec.ttl <= 0 || rec.ttl > LeaseTTLMax || rec.remaining < 0 || rec.remaining > LeaseTTLMax {
			return nil, snapCorrupt("lease %d with TTL %d and remaining TTL %d", rec.id, rec.ttl, rec.remaining)
		}
		if k := len(rs); k > 0 && rs[k-1].id >= rec.id {
			return nil, snapCorrupt("leases out of order")
		}
		rs = append(rs, rec)
	}
	return rs, nil
}

// expiryHeap orders touched leases by expiry, then ID.
type expiryHeap []*lease

func (h expiryHeap) Len() int { return len(h) }
func (h expiryHeap) Less(i, j int) bool {
	if h[i].expiry != h[j].expiry {
		return h[i].expiry < h[j].expiry
	}
	return h[i].id < h[j].id
}
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIndex, h[j].heapIndex = i, j
}
func (h *expiryHeap) Push(x any) {
	l := x.(*lease)
	l.heapIndex = len(*h)
	*h = append(*h, l)
}
func (h *expiryHeap) Pop() any {
	old := *h
	l := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	l.heapIndex = -1
	return l
}

// scheduledCheckpoint is a checkpoint of l due at tick due.
type scheduledCheckpoint struct {
	due uint64
	l   *lease
}

// checkpointHeap orders scheduled checkpoints by due tick, then ID.
type checkpointHeap []scheduledCheckpoint

func (h checkpointHeap) Len() int { return len(h) }
func (h checkpointHeap) Less(i, j int) bool {
	if h[i].due != h[j].due {
		return h[i].due < h[j].due
	}
	return h[i].l.id < h[j].l.id
}
func (h checkpointHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *checkpointHeap) Push(x any)   { *h = append(*h, x.(scheduledCheckpoint)) }
func (h *checkpointHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}
