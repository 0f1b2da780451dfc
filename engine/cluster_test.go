package engine

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/cryptotest"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/basaltdb/basalt/diskio"
	"github.com/basaltdb/basalt/engine/mvcc"
	"github.com/basaltdb/basalt/raftlog"
)

// cluster is an in-memory cluster of members on simulated disks. Messages
// are passed by hand, in the order they were sent; a cut member's messages,
// to it and from it, are dropped. Everything runs on the test goroutine, and
// raft's election jitter reads a seeded crypto/rand, so a run is
// deterministic: trace hashes every message and snapshot event.
type cluster struct {
	t       *testing.T
	members []*member
	queue   []*raftpb.Message
	trace   uint64
}

type member struct {
	id   uint64
	disk *diskio.Sim
	log  *raftlog.Log
	node *Node
	view *mvcc.View
	cut  bool
	// installed counts snapshots installed from a leader.
	installed int
	// hold keeps this member's snapshot jobs in held instead of writing them.
	hold bool
	held *SnapshotJob
	// err is the Output.Err that stopped the member.
	err error
}

const clusterSnapshotEntries = 20

func newCluster(t *testing.T, size int) *cluster {
	c := &cluster{t: t}
	var peers []Peer
	for i := range size {
		peers = append(peers, Peer{ID: uint64(i + 1)})
	}
	for _, p := range peers {
		m := &member{id: p.ID, disk: diskio.NewSim()}
		c.members = append(c.members, m)
		c.start(m, peers)
	}
	return c
}

func (c *cluster) start(m *member, peers []Peer) {
	c.t.Helper()
	log, err := raftlog.Open(m.disk, "member", raftlog.Options{SegmentBytes: 4 << 10, SnapshotsRetained: 2})
	if err != nil {
		c.t.Fatal(err)
	}
	node, err := NewNode(Config{
		ID:                  m.id,
		Log:                 log,
		Bootstrap:           peers,
		Join:                len(peers) == 0,
		ElectionTicks:       10,
		HeartbeatTicks:      1,
		RequestTimeoutTicks: 1000,
		RequestBytesMax:     1 << 20,
		Rand:                rand.New(rand.NewPCG(m.id, 7)),
		SnapshotEntries:     clusterSnapshotEntries,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	m.log, m.node, m.held, m.err = log, node, nil, nil
}

func (c *cluster) member(id uint64) *member { return c.members[id-1] }

func (c *cluster) record(format string, args ...any) {
	h := fnv.New64a()
	fmt.Fprintf(h, "%x|", c.trace)
	fmt.Fprintf(h, format, args...)
	c.trace = h.Sum64()
}

// stabilize processes Readies and delivers messages until nothing moves.
func (c *cluster) stabilize() {
	c.t.Helper()
	for {
		moved := false
		for _, m := range c.members {
			for m.err == nil && m.node.HasReady() {
				c.ready(m)
				moved = true
			}
		}
		queue := c.queue
		c.queue = nil
		for _, msg := range queue {
			to := c.member(msg.GetTo())
			if to.cut || to.err != nil {
				continue
			}
			c.record("deliver %s", raft.DescribeMessage(msg, nil))
			if err := to.node.Step(msg); err != nil && !errors.Is(err, raft.ErrStepPeerNotFound) {
				c.t.Fatalf("member %d stepping %s: %v", to.id, raft.DescribeMessage(msg, nil), err)
			}
			moved = true
		}
		if !moved {
			return
		}
	}
}

// ready does one Ready of m as a host does.
func (c *cluster) ready(m *member) {
	c.t.Helper()
	rd := m.node.Ready()
	if rd.Snapshot != nil {
		if err := m.log.ApplySnapshot(rd.Snapshot.GetMetadata()); err != nil {
			c.t.Fatal(err)
		}
		m.installed++
		c.record("member %d installs snapshot %d", m.id, rd.Snapshot.GetMetadata().GetIndex())
	}
	if err := m.log.Save(rd.HardState, rd.Entries, rd.MustSync); err != nil {
		c.t.Fatal(err)
	}
	for _, msg := range rd.Messages {
		c.send(m, msg)
	}
	out := m.node.Advance(rd)
	if out.Err != nil {
		m.err = out.Err
		return
	}
	if out.View != nil {
		m.view = out.View
	}
	if out.Snapshot != nil {
		c.record("member %d snapshot job %d", m.id, out.Snapshot.Meta.GetIndex())
		if m.hold {
			m.held = out.Snapshot
		} else {
			c.writeSnapshot(m, out.Snapshot)
		}
	}
}

// send queues msg; a MsgSnap's body goes into the receiver's log first, as
// a transport does, and a snapshot that cannot be delivered is reported.
func (c *cluster) send(from *member, msg *raftpb.Message) {
	c.t.Helper()
	to := c.member(msg.GetTo())
	if from.cut || to.cut {
		if msg.GetType() == raftpb.MsgSnap {
			from.node.ReportSnapshot(to.id, false)
		}
		return
	}
	if msg.GetType() == raftpb.MsgSnap {
		if err := raftlog.CopySnapshot(to.log, from.log, msg.GetSnapshot()); err != nil {
			c.t.Fatalf("copying snapshot %d from member %d to %d: %v", msg.GetSnapshot().GetMetadata().GetIndex(), from.id, to.id, err)
		}
	}
	c.queue = append(c.queue, msg)
}

func (c *cluster) writeSnapshot(m *member, job *SnapshotJob) {
	c.t.Helper()
	w, err := m.log.CreateSnapshot(job.Meta)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := WriteSnapshot(w, job); err != nil {
		c.t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		c.t.Fatal(err)
	}
	if m.node.SnapshotDone(job, nil) {
		if err := m.log.SnapshotSaved(job.Meta); err != nil {
			c.t.Fatal(err)
		}
	}
}

func (c *cluster) tick(n int) {
	c.t.Helper()
	for range n {
		for _, m := range c.members {
			if m.err == nil {
				m.node.Tick()
			}
		}
		c.stabilize()
	}
}

func (c *cluster) leader() *member {
	c.t.Helper()
	for _, m := range c.members {
		if st := m.node.Status(); !m.cut && st.Leader == m.id {
			return m
		}
	}
	c.t.Fatal("no leader")
	return nil
}

// put writes key=value through the leader and waits for the answer.
func (c *cluster) put(key, value string) {
	c.t.Helper()
	l := c.leader()
	if _, err := l.node.Submit(Request{Op: &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(key), Value: []byte(value)}}}); err != nil {
		c.t.Fatal(err)
	}
	c.stabilize()
}

func (m *member) hash(t *testing.T) (applied uint64, rev int64, hash uint32) {
	t.Helper()
	h, _, err := m.view.HashKV(0)
	if err != nil {
		t.Fatal(err)
	}
	return m.node.Status().Applied, m.view.Rev(), h
}

func firstIndex(t *testing.T, l *raftlog.Log) uint64 {
	t.Helper()
	i, err := l.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func lastIndex(t *testing.T, l *raftlog.Log) uint64 {
	t.Helper()
	i, err := l.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// TestFollowerCatchesUpBySnapshot cuts a follower off until the leader's
// log is compacted past it; healed, the follower catches up by installing
// the leader's snapshot and ends with the same state. A snapshot job the
// follower had in flight is overtaken and not saved. The run is
// deterministic: it is done twice and must trace the same.
func TestFollowerCatchesUpBySnapshot(t *testing.T) {
	first := followerCatchUp(t)
	if second := followerCatchUp(t); second != first {
		t.Fatalf("two runs traced %x and %x", first, second)
	}
}

func followerCatchUp(t *testing.T) uint64 {
	cryptotest.SetGlobalRandom(t, 1)
	c := newCluster(t, 3)
	c.stabilize()
	if err := c.member(1).node.raw.Campaign(); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	if l := c.leader(); l.id != 1 {
		t.Fatalf("member %d leads, want 1", l.id)
	}
	// Member 3 gets a snapshot job at index 20 and keeps it in flight.
	f := c.member(3)
	f.hold = true
	for i := range 25 {
		c.put(fmt.Sprintf("k%03d", i), "before")
	}
	if f.held == nil || f.held.Meta.GetIndex() != clusterSnapshotEntries {
		t.Fatalf("follower's held job: %v, want one at index %d", f.held, clusterSnapshotEntries)
	}
	f.cut = true
	for i := range 150 {
		c.put(fmt.Sprintf("k%03d", i%40), fmt.Sprintf("v%d", i))
	}
	l := c.leader()
	if fi, li := firstIndex(t, l.log), lastIndex(t, f.log); fi <= li+1 {
		t.Fatalf("leader's log starts at %d, the cut-off follower's ends at %d: not compacted past it", fi, li)
	}
	f.cut = false
	c.tick(30)
	c.put("after", "heal")

	if f.installed == 0 {
		t.Fatal("the follower caught up without a snapshot")
	}
	t.Logf("follower installed %d snapshot(s); leader's log starts at %d", f.installed, firstIndex(t, l.log))
	if f.err != nil {
		t.Fatal(f.err)
	}
	base := firstIndex(t, f.log) - 1
	if base <= clusterSnapshotEntries {
		t.Fatalf("follower's log base is %d", base)
	}
	// The job from before the cut is overtaken: finishing it changes
	// nothing.
	f.hold = false
	job := f.held
	f.held = nil
	c.writeSnapshot(f, job)
	if got := firstIndex(t, f.log) - 1; got != base {
		t.Fatalf("an overtaken job moved the follower's base from %d to %d", base, got)
	}

	want := sameState(t, c)
	// The follower restarts from the snapshot it installed plus its log.
	if err := f.log.Close(); err != nil {
		t.Fatal(err)
	}
	c.start(f, nil)
	c.tick(5)
	if got := sameState(t, c); got != want+1 {
		t.Fatalf("after the follower's restart the members are at revision %d, want %d", got, want+1)
	}
	return c.trace
}

// sameState writes one more key and checks that every member but the cut
// ones applied the same index to the same revision and hash; it returns
// that revision.
func sameState(t *testing.T, c *cluster) int64 {
	t.Helper()
	c.put("probe", fmt.Sprint(c.trace))
	applied, rev, hash := c.members[0].hash(t)
	for _, m := range c.members[1:] {
		if m.cut {
			continue
		}
		a, r, h := m.hash(t)
		if a != applied || r != rev || h != hash {
			t.Fatalf("member %d at applied %d, revision %d, hash %08x; member 1 at %d, %d, %08x", m.id, a, r, h, applied, rev, hash)
		}
	}
	return rev
}

// TestInstallDamagedSnapshot: a received body that rots on the receiver's
// disk after its checksum was checked on arrival stops the member with
// Output.Err instead of installing part of it, and the member refuses to
// restart on it: its log starts after the snapshot and nothing else covers
// that prefix.
func TestInstallDamagedSnapshot(t *testing.T) {
	cryptotest.SetGlobalRandom(t, 2)
	c := newCluster(t, 3)
	c.stabilize()
	if err := c.member(1).node.raw.Campaign(); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	f := c.member(3)
	f.cut = true
	for i := range 60 {
		c.put(fmt.Sprintf("k%d", i), "v")
	}
	// Every read of a snapshot body on member 3 flips a stored bit (the
	// header and trailer reads, 64 bytes or less, are spared).
	bodyRead := func(op diskio.Op) bool {
		return op.Kind == diskio.OpRead && strings.HasSuffix(op.Path, ".snap") && op.Len > 64
	}
	f.disk.SetInjector(diskio.If(bodyRead, diskio.FlipBit(rand.New(rand.NewPCG(1, 1)))))
	f.cut = false
	c.tick(30)
	if f.err == nil {
		t.Fatal("a member installed a damaged snapshot")
	}
	if !errors.Is(f.err, raftlog.ErrCorrupt) && !errors.Is(f.err, ErrSnapshotCorrupt) && !errors.Is(f.err, mvcc.ErrCorrupt) {
		t.Fatalf("Output.Err = %v, want a corruption error", f.err)
	}
	if out := f.node.Advance(Ready{}); !errors.Is(out.Err, f.err) {
		t.Fatalf("a failed node advanced: %v", out.Err)
	}
	f.disk.SetInjector(nil)
	if err := f.log.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := raftlog.Open(f.disk, "member", raftlog.Options{SegmentBytes: 4 << 10}); !errors.Is(err, raftlog.ErrCorrupt) {
		t.Fatalf("reopening the log on a rotten snapshot: %v, want ErrCorrupt", err)
	}
	// The two others go on.
	f.cut = true
	sameState(t, c)
}

// TestLearnerJoinsAfterSnapshot adds a learner once the leader's log starts
// after a snapshot that predates it: raft would refuse that snapshot (the
// learner is not in its configuration), so the engine withholds it and
// makes a newer one, which the learner installs.
func TestLearnerJoinsAfterSnapshot(t *testing.T) {
	cryptotest.SetGlobalRandom(t, 1)
	c := newCluster(t, 3)
	c.stabilize()
	if err := c.member(1).node.raw.Campaign(); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	for i := range clusterSnapshotEntries + 5 {
		c.put(fmt.Sprintf("k%03d", i), "v")
	}
	l := c.leader()
	if fi := firstIndex(t, l.log); fi <= 1 {
		t.Fatalf("leader's log starts at %d: no snapshot was taken", fi)
	}
	// Member 4 starts empty, waiting to be sent the cluster's state.
	m := &member{id: 4, disk: diskio.NewSim()}
	c.members = append(c.members, m)
	c.start(m, nil)
	typ := raftpb.ConfChangeAddLearnerNode
	learner := &pb.Member{ID: 4, PeerURLs: []string{"http://d:2380"}}
	if _, err := l.node.Submit(Request{ConfChange: &raftpb.ConfChange{Type: &typ, NodeId: new(uint64(4)), Context: EncodeMember(learner)}}); err != nil {
		t.Fatal(err)
	}
	c.tick(30)
	if m.installed == 0 {
		t.Fatal("the learner installed no snapshot")
	}
	la, lrev, lhash := l.hash(t)
	ma, mrev, mhash := m.hash(t)
	if ma != la || mrev != lrev || mhash != lhash {
		t.Fatalf("learner at applied %d revision %d hash %08x, leader at %d, %d, %08x", ma, mrev, mhash, la, lrev, lhash)
	}
	members := m.node.Status().Members
	if len(members) != 4 || members[3].ID != 4 || !members[3].IsLearner || members[3].PeerURLs[0] != "http://d:2380" {
		t.Fatalf("the learner's members table: %v", members)
	}
}
