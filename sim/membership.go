package sim

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/engine"
)

// errLearnerRefused answers, on a learner, every request but a
// serializable read, as etcd's gRPC layer does (ErrGRPCNotSupportedForLearner).
var errLearnerRefused = errors.New("sim: a learner serves only serializable reads")

// OperatorOptions drive the operator, the actor that changes the
// membership during the safety phase.
type OperatorOptions struct {
	// ActPPM (per second) is the chance the operator starts a change when
	// none is in doubt; 0 leaves the membership fixed.
	ActPPM uint32
	// Mix weighs the changes, indexed by changeKind.
	Mix [changeKinds]uint32
}

// changeKind is a kind of membership change.
type changeKind int

const (
	// changeAdd adds a learner: a new member with a fresh disk, started once
	// its addition is committed.
	changeAdd changeKind = iota
	// changePromote promotes the learner; the leader refuses one that has
	// not caught up.
	changePromote
	// changeRemove removes a learner, or a voter when enough healthy voters
	// remain.
	changeRemove
	// changeUpdate gives a member new peer URLs.
	changeUpdate
	// changeMistake is a change etcd refuses at apply: promoting a voter,
	// removing a removed member, taking another member's peer URLs.
	changeMistake
	changeKinds
)

func (k changeKind) String() string {
	return [...]string{"add", "promote", "remove", "update", "mistake"}[k]
}

// drawOperator draws the operator's options from a stream of their own,
// so that the other groups' draws stay as they were. A single member has
// no majority to keep while it changes: the operator runs with 3 or 5.
func drawOperator(seed uint64, members int) OperatorOptions {
	var o OperatorOptions
	g := newRNG(seed, streamOptOperator)
	if members < 3 || !g.chance(650_000) {
		return o
	}
	o.ActPPM = uint32(g.between(50_000, 400_000))
	for k := range o.Mix {
		o.Mix[k] = uint32(g.between(1, 100))
	}
	o.Mix[changeMistake] = sometimes(g, 500_000, 0, 20)
	return o
}

func (o OperatorOptions) String() string {
	var mix []string
	for k, x := range o.Mix {
		mix = append(mix, fmt.Sprintf("%s=%d", changeKind(k), x))
	}
	return fmt.Sprintf("  operator: act=%dppm/s mix=[%s] voters<=%d learners<=%d new-members<=%d",
		o.ActPPM, strings.Join(mix, " "), votersMax, learnersMax, membersAddedMax)
}

// memberCall is one membership request of the operator, sent to one
// member (a promotion may be forwarded once to the leader, as etcd's
// MemberPromote is).
type memberCall struct {
	kind changeKind
	// target is the index of the member the change is about.
	target int
	cc     *raftpb.ConfChange
	// member is the member that took the request.
	member         int
	sent, answered time.Duration
	forwarded      bool
	// id is the engine's request ID; 0 if no member proposed it.
	id    engine.ID
	state attemptState
	resp  *pb.MemberListResponse
	err   error
	// ready is the leader's LearnerReady verdict on a promotion, at its
	// applied index readyApplied; readyChecked is set once it was asked.
	readyChecked bool
	ready        error
	readyApplied uint64
}

// callKey names a proposed call on the member incarnation that took it.
type callKey struct {
	member int
	inc    uint64
	id     engine.ID
}

// peerState is what the operator and the checkers keep of a member.
type peerState struct {
	// booted is set once the member was first started.
	booted bool
	// retired is set once the member stopped for good after its removal.
	retired bool
	// removedIDs are the removed members of the table the member last
	// applied: its transport refuses their messages.
	removedIDs []uint64
	// tableApplied is the applied index of the last table check.
	tableApplied uint64
}

// operator changes the membership at random times (OperatorOptions) and
// holds the members model: the members table replayed from the committed
// log with etcd's rules, written apart from engine/members.go. It is the
// oracle of the table every member must hold at each applied index and
// of the answer every committed membership request must have had.
type operator struct {
	w     *World
	rng   rng
	o     OperatorOptions
	model membersModel
	peers []*peerState
	calls []*memberCall
	// inflight are the proposed calls waiting for their answer.
	inflight map[callKey]*memberCall
	// endpoints are the members clients talk to; nil when stale.
	endpoints []int
	urlSeq    int
	stats     *MemberStats
}

// MemberStats are the operator's figures of a run.
type MemberStats struct {
	// Calls counts the operator's membership requests; Refused those no
	// member proposed.
	Calls, Refused int
	// Joined counts the members started after their addition, Promoted,
	// Removed and Updated the changes committed; Retired the removed
	// members that stopped.
	Joined, Promoted, Removed, Updated, Retired int
}

// String is the figures for the run's line; empty when there was no call.
func (s MemberStats) String() string {
	if s.Calls == 0 {
		return ""
	}
	return fmt.Sprintf(" member-calls=%d refused=%d joined=%d promoted=%d removed=%d updated=%d retired=%d",
		s.Calls, s.Refused, s.Joined, s.Promoted, s.Removed, s.Updated, s.Retired)
}

func newOperator(w *World) *operator {
	op := &operator{
		w:        w,
		rng:      newRNG(w.opts.Seed, streamOperator),
		o:        w.opts.Operator,
		model:    newMembersModel(),
		inflight: map[callKey]*memberCall{},
		stats:    &w.stats.Members,
	}
	for range w.opts.Members {
		op.peers = append(op.peers, &peerState{booted: true})
	}
	return op
}

func (op *operator) on() bool { return op.o.ActPPM > 0 }

func (op *operator) start() {
	if op.on() {
		op.w.after(time.Second, evMember, -1, op.poll)
	}
}

// peerURL is member id's n-th peer URL.
func peerURL(id uint64, n int) string {
	if n == 0 {
		return fmt.Sprintf("http://m%d:2380", id)
	}
	return fmt.Sprintf("http://m%d-%d:2380", id, n)
}

// bootstrap returns the initial members for member m's engine, and
// whether m joins a running cluster instead. The initial members carry
// their peer URLs when the operator may change them.
func (op *operator) bootstrap(m *member) ([]engine.Peer, bool) {
	if m.idx >= op.w.opts.Members {
		return nil, true
	}
	peers := make([]engine.Peer, op.w.opts.Members)
	for i := range peers {
		id := uint64(i + 1)
		peers[i].ID = id
		if op.on() {
			peers[i].Context = engine.EncodeMember(&pb.Member{ID: id, PeerURLs: []string{peerURL(id, 0)}})
		}
	}
	return peers, false
}

// poll is the operator's once-a-second look at the cluster: it starts the
// members whose addition is committed and, now and then, makes a change.
func (op *operator) poll() {
	w := op.w
	if w.phase != phaseSafety {
		return
	}
	for i, p := range op.peers {
		if !p.booted && op.model.has(uint64(i+1)) {
			op.boot(i)
		}
	}
	if op.rng.chance(op.o.ActPPM) && !op.inDoubt(true) && op.model.ready(w) {
		op.act()
	}
	w.after(time.Second, evMember, -1, op.poll)
}

// boot starts a member added to the running cluster: empty disk, no
// bootstrap, it waits for the leader.
func (op *operator) boot(i int) {
	p := op.peers[i]
	p.booted = true
	op.endpoints = nil
	op.stats.Joined++
	m := op.w.members[i]
	op.w.mix(uint64(evMember), 1, m.id)
	m.restart()
	op.w.after(op.rng.dur(0, tickInterval), evTick, i, m.tick)
}

// inDoubt reports whether a call may still change the membership: sent
// and not answered, or proposed and not seen in the committed log. With
// blocking, a doubtful call stops counting once it is old: its proposal
// was most likely lost (raft drops a conf change proposed while another
// is unapplied), and act counts the worst it could still do.
func (op *operator) inDoubt(blocking bool) bool {
	for _, c := range op.calls {
		if op.doubtful(c) && (!blocking || op.w.now-c.sent <= operatorStaleAfter) {
			return true
		}
	}
	return false
}

func (op *operator) doubtful(c *memberCall) bool {
	switch {
	case c.state == attemptPending:
		return true
	case c.id == 0:
		return false
	}
	_, committed := op.model.results[uint64(c.id)]
	return !committed
}

// doubtfulTargets are the members a doubtful call of kind k is about, all
// kinds with k < 0.
func (op *operator) doubtfulTargets(k changeKind) []int {
	var out []int
	for _, c := range op.calls {
		if op.doubtful(c) && c.target >= 0 && (k < 0 || c.kind == k) {
			out = append(out, c.target)
		}
	}
	return out
}

// healthy reports whether member i can be counted on for liveness: its
// disk is not one that fails, and it has not failed.
func (op *operator) healthy(i int) bool {
	return !op.w.opts.faulty(i) && !op.w.members[i].failed
}

// act makes one change, drawn by the mix among those that apply. The
// bounds count the worst that old doubtful calls may still do: their
// promotions as done, their removals as done or not, in every
// combination.
func (op *operator) act() {
	w := op.w
	voters, learners := op.model.voters(), op.model.learners()
	promoting, removing := op.doubtfulTargets(changePromote), op.doubtfulTargets(changeRemove)
	var weights [changeKinds]uint32
	if len(learners) == 0 && len(voters) <= votersMax && len(op.doubtfulTargets(changeAdd)) == 0 &&
		len(op.peers)-w.opts.Members < membersAddedMax {
		weights[changeAdd] = op.o.Mix[changeAdd]
	}
	var promotable []uint64
	for _, id := range learners {
		if op.peers[id-1].booted && len(voters)+len(promoting) < votersMax {
			promotable = append(promotable, id)
		}
	}
	if len(promotable) > 0 {
		weights[changePromote] = op.o.Mix[changePromote]
	}
	removable := slices.Clone(learners)
	for _, id := range voters {
		if !slices.Contains(removing, int(id-1)) && op.removable(voters, removing, id) {
			removable = append(removable, id)
		}
	}
	if len(removable) > 0 {
		weights[changeRemove] = op.o.Mix[changeRemove]
	}
	weights[changeUpdate] = op.o.Mix[changeUpdate]
	weights[changeMistake] = op.o.Mix[changeMistake]
	k := changeKind(op.rng.pick(weights[:]))
	if weights[k] == 0 {
		return
	}
	members := append(slices.Clone(voters), learners...)
	c := &memberCall{kind: k, target: -1}
	switch k {
	case changeAdd:
		idx := len(w.members)
		id := uint64(idx + 1)
		op.peers = append(op.peers, &peerState{})
		w.members = append(w.members, newMember(w, idx, op.rng))
		w.net.grow()
		c.target = idx
		c.cc = confChange(raftpb.ConfChangeAddLearnerNode, id,
			engine.EncodeMember(&pb.Member{ID: id, PeerURLs: []string{peerURL(id, 0)}, IsLearner: true}))
	case changePromote:
		id := promotable[op.rng.intN(uint64(len(promotable)))]
		c.target, c.cc = int(id-1), confChange(raftpb.ConfChangeAddNode, id, engine.PromoteContext)
	case changeRemove:
		id := removable[op.rng.intN(uint64(len(removable)))]
		c.target, c.cc = int(id-1), confChange(raftpb.ConfChangeRemoveNode, id, nil)
	case changeUpdate:
		id := members[op.rng.intN(uint64(len(members)))]
		op.urlSeq++
		c.target = int(id - 1)
		c.cc = confChange(raftpb.ConfChangeUpdateNode, id, engine.EncodeMember(&pb.Member{ID: id, PeerURLs: []string{peerURL(id, op.urlSeq)}}))
	case changeMistake:
		c.cc = op.mistake(voters, members)
	}
	op.calls = append(op.calls, c)
	op.stats.Calls++
	w.mix(uint64(evMember), 2, uint64(k), c.cc.GetNodeId())
	op.send(c)
}

// mistake draws a change etcd refuses at apply.
func (op *operator) mistake(voters, members []uint64) *raftpb.ConfChange {
	removed := op.model.removedIDs()
	switch op.rng.intN(3) {
	case 0:
		id := voters[op.rng.intN(uint64(len(voters)))]
		return confChange(raftpb.ConfChangeAddNode, id, engine.PromoteContext)
	case 1:
		if len(removed) > 0 {
			return confChange(raftpb.ConfChangeRemoveNode, removed[op.rng.intN(uint64(len(removed)))], nil)
		}
	}
	a := members[op.rng.intN(uint64(len(members)))]
	b := members[op.rng.intN(uint64(len(members)))]
	urls := op.model.byID[b].urls
	if a == b || len(urls) == 0 {
		return confChange(raftpb.ConfChangeRemoveNode, uint64(len(op.w.members)+1000), nil)
	}
	return confChange(raftpb.ConfChangeUpdateNode, a, engine.EncodeMember(&pb.Member{ID: a, PeerURLs: urls}))
}

// removable reports whether voter id may be removed: whichever of the
// doubtful removals (of members removing) commit as well, at least
// votersMin voters remain, and a majority of them have disks that do not
// fail. A removal committing late must not leave a majority that can
// fail: its target may be a healthy member when the one removed since is
// not.
func (op *operator) removable(voters []uint64, removing []int, id uint64) bool {
	if len(removing) > removingMax {
		return false
	}
	for subset := range 1 << len(removing) {
		left, healthy := 0, 0
		for _, v := range voters {
			k := slices.Index(removing, int(v-1))
			if v == id || k >= 0 && subset&(1<<k) != 0 {
				continue
			}
			left++
			if op.healthy(int(v - 1)) {
				healthy++
			}
		}
		if left < votersMin || healthy < left/2+1 {
			return false
		}
	}
	return true
}

func confChange(t raftpb.ConfChangeType, id uint64, ctx []byte) *raftpb.ConfChange {
	return &raftpb.ConfChange{Type: &t, NodeId: new(id), Context: ctx}
}

// send sends c to a member clients talk to, and gives up on it after
// operatorCallTimeout.
func (op *operator) send(c *memberCall) {
	w := op.w
	eps := op.clientEndpoints()
	c.member, c.sent = eps[op.rng.intN(uint64(len(eps)))], w.now
	m := w.members[c.member]
	w.after(op.rng.dur(clientLinkDelayMin, clientLinkDelayMax), evMember, c.member, func() { op.deliver(m, c) })
	w.after(operatorCallTimeout, evMember, -1, func() {
		if c.state == attemptPending {
			c.state, c.answered = attemptIndefinite, w.now
		}
	})
}

// deliver is member m taking the operator's call, as the server's cluster
// service does: a learner refuses it; a promotion is checked by the
// leader (LearnerReady), and forwarded to it from another member.
func (op *operator) deliver(m *member, c *memberCall) {
	if !m.up {
		return
	}
	if m.paused() {
		m.hold(func() { op.deliver(m, c) })
		return
	}
	m.guard(func() {
		if op.isLearner(m) {
			op.reply(c, nil, errLearnerRefused)
			return
		}
		if c.cc.GetType() == raftpb.ConfChangeAddNode && bytes.Equal(c.cc.GetContext(), engine.PromoteContext) {
			err := m.node.LearnerReady(c.cc.GetNodeId())
			if errors.Is(err, engine.ErrNotLeader) {
				op.forward(m, c)
				return
			}
			c.readyChecked, c.ready, c.readyApplied = true, err, m.node.Status().Applied
			if err != nil {
				op.reply(c, nil, err)
				return
			}
		}
		id, err := m.node.Submit(engine.Request{ConfChange: c.cc})
		if err != nil {
			op.reply(c, nil, err)
			return
		}
		c.id, c.member = id, m.idx
		op.inflight[callKey{m.idx, m.incarnation, id}] = c
		m.kick()
	})
}

// forward sends a promotion to the leader member m knows, once.
func (op *operator) forward(m *member, c *memberCall) {
	leader := m.node.Status().Leader
	if leader == 0 || c.forwarded || int(leader-1) >= len(op.w.members) {
		op.reply(c, nil, engine.ErrNoLeader)
		return
	}
	c.forwarded = true
	to := op.w.members[leader-1]
	op.w.after(op.rng.dur(clientLinkDelayMin, clientLinkDelayMax), evMember, to.idx, func() { op.deliver(to, c) })
}

// isLearner reports whether m is a learner in its own members table.
func (op *operator) isLearner(m *member) bool {
	if !op.on() {
		return false
	}
	for _, mb := range m.node.Status().Members {
		if mb.ID == m.id {
			return mb.IsLearner
		}
	}
	return false
}

// refusesRequest answers a client request a learner does not serve.
func (op *operator) refusesRequest(m *member, a *attempt) bool {
	if (a.op.read != nil && a.op.serializable) || !op.isLearner(m) {
		return false
	}
	op.w.work.reply(a, nil, errLearnerRefused, 0)
	return true
}

// answered routes an engine response that no client attempt waits for.
func (op *operator) answered(m *member, r engine.Response) {
	k := callKey{m.idx, m.incarnation, r.ID}
	c := op.inflight[k]
	if c == nil {
		return
	}
	delete(op.inflight, k)
	list, _ := r.Result.(*pb.MemberListResponse)
	op.reply(c, list, r.Err)
}

// reply sends an answer back to the operator.
func (op *operator) reply(c *memberCall, resp *pb.MemberListResponse, err error) {
	op.w.after(op.rng.dur(clientLinkDelayMin, clientLinkDelayMax), evMember, -1, func() {
		if c.state != attemptPending {
			return
		}
		c.answered, c.resp, c.err = op.w.now, resp, err
		switch {
		case c.id == 0:
			c.state = attemptRefused
			op.stats.Refused++
		case errors.Is(err, engine.ErrTimeout):
			c.state = attemptIndefinite
		default:
			c.state = attemptOK
		}
		op.w.mix(uint64(evMember), 3, uint64(c.state), uint64(len(resp.GetMembers())))
	})
}

// afterAdvance checks member m's members table against the model at its
// applied index, and stops m once it has applied its own removal (etcd's
// member exits when it learns it was removed).
func (op *operator) afterAdvance(m *member) {
	if !op.on() || !m.up {
		return
	}
	st := m.node.Status()
	p := op.peers[m.idx]
	p.removedIDs = st.RemovedIDs
	if st.Applied != p.tableApplied && st.Applied > 0 && st.Applied <= uint64(len(op.w.chk.committed)) && op.model.ready(op.w) {
		p.tableApplied = st.Applied
		got, want := tableOf(st.Members, st.RemovedIDs), op.model.tableAt(st.Applied)
		if got != want {
			op.w.fail("members table", fmt.Sprintf("member %d holds %s at applied index %d; the committed log gives %s", m.id, got, st.Applied, want))
			return
		}
	}
	if st.Removed {
		op.retire(m, "it applied its removal")
	}
}

// rejects is the peer transport's refusal of a message from a removed
// member: the message is dropped and the sender learns it was removed.
func (op *operator) rejects(m, from *member, fromInc uint64) bool {
	p := op.peers[m.idx]
	if !op.on() || !slices.Contains(p.removedIDs, from.id) {
		return false
	}
	if !op.model.removed[from.id] {
		op.w.fail("members table", fmt.Sprintf("member %d refused member %d as removed; the committed log does not remove it", m.id, from.id))
		return true
	}
	op.w.after(op.rng.dur(clientLinkDelayMin, clientLinkDelayMax), evMember, from.idx, func() {
		if from.up && from.incarnation == fromInc {
			op.retire(from, fmt.Sprintf("member %d refused it", m.id))
		}
	})
	return true
}

// retire stops a removed member for good. Its state as it stops is
// compared with the other members' at the same applied index: what a
// removed member holds must be a prefix of the cluster's history.
func (op *operator) retire(m *member, why string) {
	p := op.peers[m.idx]
	if p.retired {
		return
	}
	if applied := m.node.Status().Applied; m.view != nil && applied > 0 && applied <= uint64(len(op.w.chk.committed)) {
		op.w.chk.sampleHash(m, applied)
	}
	p.retired = true
	op.endpoints = nil
	op.stats.Retired++
	op.w.mix(uint64(evMember), 4, m.id, uint64(len(why)))
	m.stop()
	m.failed = true
}

// clientEndpoints are the members clients send to: started, not retired,
// and in the members table. Without the operator, all members in order,
// so the clients' draws are the ones they always were.
func (op *operator) clientEndpoints() []int {
	if op.endpoints != nil {
		return op.endpoints
	}
	for i, p := range op.peers {
		if p.booted && !p.retired && (!op.on() || !op.model.removed[uint64(i+1)]) {
			op.endpoints = append(op.endpoints, i)
		}
	}
	if len(op.endpoints) == 0 {
		panic(fmt.Sprintf("sim: no member to send to among %d", len(op.peers)))
	}
	return op.endpoints
}

// isVoter reports whether member i is a voter of the committed members
// table.
func (op *operator) isVoter(i int) bool {
	if !op.model.ready(op.w) {
		return i < op.w.opts.Members
	}
	mb, ok := op.model.byID[uint64(i+1)]
	return ok && !mb.learner
}

// voterCount is the number of voters of the committed members table.
func (op *operator) voterCount() int {
	if !op.model.ready(op.w) {
		return op.w.opts.Members
	}
	return len(op.model.voters())
}

// coreCandidates are the members the liveness core is drawn from: the
// intact voters; joinCore are the members that join it besides: intact,
// started learners at random, and every intact started member the table
// or a doubtful call names when the core needs them all: a change is in
// doubt (a promotion or a removal committing during the liveness phase
// must find the members it needs), or a voter may not have applied the
// last change of the voters. raft takes a configuration at apply: a
// majority of the new voters that still runs the old configuration cannot
// elect a leader without the members that know the change committed.
func (op *operator) coreCandidates() (voters, joinCore []int) {
	for i, m := range op.w.members {
		if !m.failed && op.isVoter(i) {
			voters = append(voters, i)
		}
	}
	if !op.on() {
		return voters, nil
	}
	all := op.inDoubt(false)
	for _, i := range voters {
		m := op.w.members[i]
		applied := m.durableCommit
		if m.up {
			applied = m.node.Status().Applied
		}
		all = all || applied < op.model.votersChangedAt
	}
	targets := op.doubtfulTargets(-1)
	for i, m := range op.w.members {
		if m.failed || !op.peers[i].booted {
			continue
		}
		_, inTable := op.model.byID[uint64(i+1)]
		if inTable && (all || !op.isVoter(i) && op.rng.intN(2) == 0) || slices.Contains(targets, i) {
			joinCore = append(joinCore, i)
		}
	}
	return voters, joinCore
}

// dropFromCore reports whether core member i leaves the liveness core: it
// failed, or the committed log removed it.
func (op *operator) dropFromCore(i int) bool {
	return op.w.members[i].failed || op.model.removed[uint64(i+1)]
}

// check is the log-order oracle for membership requests: every answered
// call is the one the committed log gives, and a promotion the leader
// refused was refused as etcd refuses it.
func (op *operator) check() {
	for _, c := range op.calls {
		switch {
		case c.state == attemptRefused && c.readyChecked && c.ready != nil:
			id := c.cc.GetNodeId()
			in := op.model.hadAt(id, c.readyApplied)
			if errors.Is(c.ready, engine.ErrMemberNotFound) == in || (errors.Is(c.ready, engine.ErrLearnerNotReady) && !in) {
				op.w.fail("log-order oracle", fmt.Sprintf("promotion of member %d refused with %v by the leader at applied index %d, where the committed log gives %s",
					id, c.ready, c.readyApplied, op.model.tableAt(c.readyApplied)))
			}
		case c.state == attemptOK:
			r, ok := op.model.results[uint64(c.id)]
			if !ok {
				op.w.fail("durability", fmt.Sprintf("%s answered %v at %v by member %d is not in the committed log", describeCall(c), describeCallAnswer(c), c.answered, c.member+1))
				return
			}
			if !sameConfErr(c.err, r.err) || c.err == nil && listOf(c.resp.GetMembers()) != r.list {
				op.w.fail("log-order oracle", fmt.Sprintf("%s (entry %d) answered %s by member %d at %v; the committed log gives %s",
					describeCall(c), r.index, describeCallAnswer(c), c.member+1, c.answered, describeConfResult(r)))
			}
		}
		if op.w.failure != nil {
			return
		}
	}
}

func sameConfErr(a, b error) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return errors.Is(a, b)
}

func describeCall(c *memberCall) string {
	return fmt.Sprintf("%s call (%v of member %d, context %q)", c.kind, c.cc.GetType(), c.cc.GetNodeId(), c.cc.GetContext())
}

func describeCallAnswer(c *memberCall) string {
	if c.err != nil {
		return "error: " + c.err.Error()
	}
	return listOf(c.resp.GetMembers())
}

func describeConfResult(r confResult) string {
	if r.err != nil {
		return "error: " + r.err.Error()
	}
	return r.list
}

// membersModel is the members table as etcd keeps it, replayed from the
// committed conf changes.
type membersModel struct {
	byID    map[uint64]modelMember
	removed map[uint64]bool
	// at and tables record the table after each committed conf change:
	// from index at[i] on, the table is tables[i] (tableOf's form).
	at     []uint64
	tables []string
	// results are the committed conf changes' answers, by request ID.
	results map[uint64]confResult
	// votersChangedAt is the index of the last change of the voters.
	votersChangedAt uint64
}

type modelMember struct {
	urls    []string
	learner bool
}

type confResult struct {
	index uint64
	// list is the members list after the change (listOf's form).
	list string
	err  error
}

func newMembersModel() membersModel {
	return membersModel{byID: map[uint64]modelMember{}, removed: map[uint64]bool{}, results: map[uint64]confResult{}}
}

// ready reports whether the model holds the bootstrap configuration.
func (mm *membersModel) ready(w *World) bool { return len(mm.at) >= w.opts.Members }

func (mm *membersModel) has(id uint64) bool { _, ok := mm.byID[id]; return ok }

func (mm *membersModel) ids(learner bool) []uint64 {
	var out []uint64
	for id, mb := range mm.byID {
		if mb.learner == learner {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func (mm *membersModel) voters() []uint64   { return mm.ids(false) }
func (mm *membersModel) learners() []uint64 { return mm.ids(true) }

func (mm *membersModel) removedIDs() []uint64 {
	var out []uint64
	for id := range mm.removed {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// tableAt is the table after applying index i.
func (mm *membersModel) tableAt(i uint64) string {
	k, _ := slices.BinarySearch(mm.at, i+1)
	if k == 0 {
		return tableOf(nil, nil)
	}
	return mm.tables[k-1]
}

// hadAt reports whether member id was in the table after index i.
func (mm *membersModel) hadAt(id uint64, i uint64) bool {
	return strings.Contains(mm.tableAt(i), fmt.Sprintf("[%d ", id))
}

// observe replays a committed conf change.
func (op *operator) observe(e *raftpb.Entry) bool {
	mm := &op.model
	cc := &raftpb.ConfChange{}
	if err := proto.Unmarshal(e.GetData(), cc); err != nil {
		op.w.fail("committed log", fmt.Sprintf("conf change %d does not decode: %v", e.GetIndex(), err))
		return false
	}
	before := mm.voters()
	err := mm.apply(cc)
	if !slices.Equal(before, mm.voters()) {
		mm.votersChangedAt = e.GetIndex()
	}
	if err == nil {
		switch {
		case cc.GetType() == raftpb.ConfChangeAddNode && bytes.Equal(cc.GetContext(), engine.PromoteContext):
			op.stats.Promoted++
		case cc.GetType() == raftpb.ConfChangeUpdateNode:
			op.stats.Updated++
		case cc.GetType() == raftpb.ConfChangeRemoveNode:
			op.stats.Removed++
		}
	}
	var list []*pb.Member
	for _, id := range append(mm.voters(), mm.learners()...) {
		mb := mm.byID[id]
		list = append(list, &pb.Member{ID: id, PeerURLs: mb.urls, IsLearner: mb.learner})
	}
	slices.SortFunc(list, func(a, b *pb.Member) int { return cmp.Compare(a.ID, b.ID) })
	table := tableOf(list, mm.removedIDs())
	if n := len(mm.tables); n == 0 || mm.tables[n-1] != table {
		mm.at, mm.tables = append(mm.at, e.GetIndex()), append(mm.tables, table)
	}
	if id := cc.GetId(); id != 0 {
		if prev, ok := mm.results[id]; ok {
			op.w.fail("committed log", fmt.Sprintf("conf change %x committed twice, at %d and %d", id, prev.index, e.GetIndex()))
			return false
		}
		mm.results[id] = confResult{index: e.GetIndex(), list: listOf(list), err: err}
	}
	op.endpoints = nil
	if op.on() {
		op.w.mix(uint64(evMember), 5, e.GetIndex(), boolWord(err == nil))
	}
	return true
}

// apply decides a conf change as etcd's ValidateConfigurationChange does
// (and basalt's refusal to remove the last voter), and applies it when
// valid.
func (mm *membersModel) apply(cc *raftpb.ConfChange) error {
	id := cc.GetNodeId()
	old, exists := mm.byID[id]
	switch cc.GetType() {
	case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
		learner := cc.GetType() == raftpb.ConfChangeAddLearnerNode
		switch {
		case mm.removed[id]:
			return engine.ErrMemberIDRemoved
		case bytes.Equal(cc.GetContext(), engine.PromoteContext):
			if learner || !exists {
				return engine.ErrMemberNotFound
			}
			if !old.learner {
				return engine.ErrMemberNotLearner
			}
			mm.byID[id] = modelMember{urls: old.urls}
			return nil
		case exists:
			return engine.ErrMemberExists
		}
		var attrs pb.Member
		if err := proto.Unmarshal(cc.GetContext(), &attrs); err != nil || (attrs.ID != 0 && attrs.ID != id) {
			return engine.ErrUnknownRequest
		}
		if mm.urlsUsed(attrs.PeerURLs, 0) {
			return engine.ErrPeerURLExists
		}
		if learner && len(mm.learners()) >= learnersMax {
			return engine.ErrTooManyLearners
		}
		mm.byID[id] = modelMember{urls: attrs.PeerURLs, learner: learner}
	case raftpb.ConfChangeRemoveNode:
		if exists && !old.learner && len(mm.voters()) == 1 {
			return engine.ErrLastVoter
		}
		switch {
		case mm.removed[id]:
			return engine.ErrMemberIDRemoved
		case !exists:
			return engine.ErrMemberNotFound
		}
		delete(mm.byID, id)
		mm.removed[id] = true
	case raftpb.ConfChangeUpdateNode:
		switch {
		case mm.removed[id]:
			return engine.ErrMemberIDRemoved
		case !exists:
			return engine.ErrMemberNotFound
		}
		var attrs pb.Member
		if err := proto.Unmarshal(cc.GetContext(), &attrs); err != nil {
			return engine.ErrUnknownRequest
		}
		if mm.urlsUsed(attrs.PeerURLs, id) {
			return engine.ErrPeerURLExists
		}
		mm.byID[id] = modelMember{urls: attrs.PeerURLs, learner: old.learner}
	default:
		return engine.ErrUnknownRequest
	}
	return nil
}

// urlsUsed reports whether a member other than except has one of urls.
func (mm *membersModel) urlsUsed(urls []string, except uint64) bool {
	for id, mb := range mm.byID {
		if id == except {
			continue
		}
		for _, u := range mb.urls {
			if slices.Contains(urls, u) {
				return true
			}
		}
	}
	return false
}

// listOf renders a members list, ordered by ID, for comparison.
func listOf(ms []*pb.Member) string {
	var b strings.Builder
	for _, m := range ms {
		kind := "voter"
		if m.IsLearner {
			kind = "learner"
		}
		fmt.Fprintf(&b, "[%d %s %s]", m.ID, kind, strings.Join(m.PeerURLs, ","))
	}
	return b.String()
}

// tableOf renders a members table: its list and the removed IDs.
func tableOf(ms []*pb.Member, removed []uint64) string {
	return fmt.Sprintf("members %s removed %v", listOf(ms), removed)
}
