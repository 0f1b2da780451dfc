package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/engine/mvcc"
)

// ID names a submitted request until it is answered.
type ID uint64

// Request is what a client asks of the member.
type Request struct {
	// Op is proposed through raft and answered once applied. A nil Op is a
	// linearizable read barrier: it is answered, with a nil Result, once the
	// member has applied everything that was committed when it was taken,
	// so a read served from the newest view afterwards is linearizable.
	Op *etcdserverpb.InternalRaftRequest
	// ConfChange, when set instead of Op, is a membership change, answered
	// once applied with a *etcdserverpb.MemberListResponse listing the
	// members after it. Its Context is the member's attributes
	// (EncodeMember) for an add or an update, PromoteContext for an AddNode
	// that promotes a learner, empty for a remove. Submit sets its ID.
	ConfChange *raftpb.ConfChange
}

// Response answers one submitted Request.
type Response struct {
	ID ID
	// Result is the applied Op's response (*etcdserverpb.PutResponse,
	// *etcdserverpb.DeleteRangeResponse, *etcdserverpb.TxnResponse or
	// *etcdserverpb.CompactionResponse) with header.revision set; nil for a
	// read barrier or when Err is set.
	Result proto.Message
	Err    error
}

// Log is the durable raft log the engine reads; the host writes it.
type Log interface {
	raft.Storage
	// OpenSnapshot opens the body of the log's base snapshot, the engine
	// state that WriteSnapshot produced at meta's index.
	OpenSnapshot() (meta *raftpb.SnapshotMetadata, body io.ReadCloser, err error)
}

// Peer is a member of the initial cluster.
type Peer struct {
	ID uint64
	// Context is carried in the bootstrap configuration change entry.
	Context []byte
}

// Config is everything a Node gets from the outside world.
type Config struct {
	// ID is this member's raft ID; never 0.
	ID uint64
	// Log is the durable raft log; the host persists into it what Ready
	// says, before calling Advance.
	Log Log
	// Bootstrap lists the initial members when Log is empty (a new
	// cluster); it is ignored when the log holds state. Peers' Context is
	// their attributes (EncodeMember), which make the first members table.
	Bootstrap []Peer
	// Join, with an empty log and no Bootstrap, starts a member added to a
	// running cluster: it waits for the leader to send it the log.
	Join bool
	// ElectionTicks and HeartbeatTicks are raft's timeouts in ticks;
	// ElectionTicks > HeartbeatTicks > 0.
	ElectionTicks  int
	HeartbeatTicks int
	// TickDuration is how long a tick lasts on the host's clock; it turns
	// lease TTLs, which are seconds, into ticks. 0 means 100ms.
	TickDuration time.Duration
	// RequestTimeoutTicks is how long a submitted request may wait for its
	// answer before it fails with ErrTimeout.
	RequestTimeoutTicks int
	// RequestBytesMax bounds an encoded proposal (etcd --max-request-bytes).
	RequestBytesMax int
	// Rand is the member's seeded source of randomness (request IDs).
	Rand *rand.Rand
	// Logger receives the engine's and raft's logs; nil discards them.
	Logger *zap.Logger
	// SnapshotEntries is how many applied entries after the last snapshot
	// make the next one due (etcd --snapshot-count); 0 means 10000.
	SnapshotEntries uint64
	// SnapshotPacedBytes, when positive, paces the snapshots of a large
	// store: a snapshot also waits until the entries applied since the last
	// one carry as many bytes as the store then held beyond
	// SnapshotPacedBytes. A snapshot rewrites the whole store, so without
	// this a store that keeps growing would cost more to snapshot, per
	// entry, the larger it got; with it, snapshots of a store larger than
	// SnapshotPacedBytes write about as much as the log does. 0 turns it
	// off.
	SnapshotPacedBytes int64
	// QuotaBytes is the size the store may reach (etcd
	// --quota-backend-bytes, measured on the bytes the store holds); 0 turns
	// the check at apply off. Members may differ: it only decides the error
	// a write answers, never the state.
	QuotaBytes int64
	// Bugs plants known bugs, for the simulator's self-test only.
	Bugs Bugs
}

// Bugs are known ways to break a member that the simulator's checkers
// must catch; production leaves them all off.
type Bugs struct {
	// ReadWithoutReadIndex answers a linearizable read barrier at once,
	// from whatever this member has applied, without asking the leader.
	ReadWithoutReadIndex bool
	// ApplyUncommitted applies entries as soon as they are in the local
	// log, before they are committed.
	ApplyUncommitted bool
}

// Status is a member's view of the cluster, for Maintenance.Status and
// response headers.
type Status struct {
	ID      uint64
	Leader  uint64
	Term    uint64
	Commit  uint64
	Applied uint64
	// Bytes is what the MVCC store and the leases hold, reported as
	// Status.dbSize.
	Bytes int64
	// Alarms are the raised alarms; the slice is never modified.
	Alarms []*etcdserverpb.AlarmMember
	// Members is the members table ordered by ID; neither the slice nor
	// its members are ever modified.
	Members []*etcdserverpb.Member
	// Removed is set once this member has been removed from the cluster.
	Removed bool
	// RemovedIDs are the members ever removed, ascending; nil when none.
	RemovedIDs []uint64
	// Auth is the auth store; it is never modified.
	Auth *AuthState
}

// Ready is the work the host must do now, in this order: persist
// Snapshot, then HardState and Entries, syncing if MustSync; then send
// Messages; then call Advance.
type Ready struct {
	HardState *raftpb.HardState // nil when unchanged
	Entries   []*raftpb.Entry
	// Snapshot, when set, is a snapshot from the leader to install. Its body
	// is already in the log (the transport wrote it with raftlog's
	// ReceiveSnapshot before stepping the message); the host makes it the
	// log's base with ApplySnapshot(Snapshot.Metadata) before it saves
	// HardState and Entries, and Advance loads the state from it.
	Snapshot *raftpb.Snapshot
	MustSync bool
	Messages []*raftpb.Message

	// raftRd is the raft.Ready this Ready was built from; nil when the
	// engine alone has work (answers to hand out).
	raftRd *raft.Ready
}

// Output is what Advance hands back to the host.
type Output struct {
	// Responses answer submitted requests, in no particular order.
	Responses []Response
	// View is the read view after this Advance's applies; nil when nothing
	// changed. Publish it before answering Responses' read barriers.
	View *mvcc.View
	// Snapshot, when set, is a snapshot the host must write (see
	// SnapshotJob); none is handed out while one is in flight.
	Snapshot *SnapshotJob
	// Compactions are the compactions applied in this Advance, each with
	// the read view just before it. etcd answers HashKV at a compaction
	// revision with the hash it took while compacting, so that a member
	// agrees with itself before and after, and with members that compacted
	// at other moments: a host that serves HashKV hashes Before at Rev
	// (off its loop: views are immutable) and keeps the newest few.
	Compactions []Compaction
	// Tokens are the simple auth tokens that the Authenticate requests
	// applied in this Advance assigned. Every member's host registers them,
	// as etcd's members do, so that a token works on any member.
	Tokens []AssignedToken
	// Err, when set, means the node could not read its durable state (the
	// body of a snapshot it was installing). The host must stop the member
	// and not use the Node again; a restart recovers from the log.
	Err error
}

// Compaction is a compaction applied, with the state it compacted.
type Compaction struct {
	Rev    int64
	Before *mvcc.View
}

// Errors a request can be answered with.
var (
	ErrTooManyRequests = errors.New("engine: too many requests")
	ErrRequestTooLarge = errors.New("engine: request is too large")
	ErrNoLeader        = errors.New("engine: no leader")
	ErrTimeout         = errors.New("engine: request timed out")
	ErrUnknownRequest  = errors.New("engine: unknown request")
	ErrLearnerNotReady = errors.New("engine: can only promote a learner member which is in sync with leader")
)

// Node is one member's deterministic core.
//
// Node never blocks, sleeps, starts goroutines, reads clocks or touches
// files; it is driven by one goroutine.
type Node struct {
	cfg   Config
	log   *zap.Logger
	raw   *raft.RawNode
	store *mvcc.Store
	// alarms are the raised alarms, replicated through raft.
	alarms alarms
	// members is the members table, replicated through raft.
	members members
	// leases are the granted leases, replicated through raft, and the
	// leader's view of their expiry.
	leases *lessor
	// auth is the auth store, replicated through raft; a published one is
	// never modified.
	auth *AuthState
	// tokens collects the simple tokens assigned until the next Advance
	// hands them out; bounded by the entries one Advance applies.
	tokens []AssignedToken

	// ticks counts Tick calls; it is the engine's only clock.
	ticks uint64
	// idNext is the next request ID. It starts at a random point so that
	// IDs of a restarted member never match entries proposed before the
	// restart.
	idNext uint64

	// pending holds the submitted, unanswered requests.
	// Invariant: len(pending) <= requestsPendingMax.
	pending map[ID]struct{}
	// proposed holds the pending requests this member proposed, with the
	// bytes it proposed, so that applying those bytes can use the request
	// instead of decoding them (see apply).
	// Invariant: every key is in pending.
	proposed map[ID]proposal
	// deadlines lists pending requests in submission order with the tick
	// at which they time out; answered ones are skipped when reached.
	// Invariant: deadlines[deadlinesHead:] holds at most
	// requestsPendingMax + len(answered-but-not-yet-reached) entries, and
	// ticks are non-decreasing.
	deadlines     []deadline
	deadlinesHead int

	reads readBarriers

	// physicalWaiters are Compact requests with physical=true, answered
	// when the physical compaction they asked for is done.
	physicalWaiters []Response

	// outbox collects responses until the next Advance hands them out.
	outbox []Response
	// compactions collects the compactions applied until the next Advance
	// hands them out. Invariant: len(compactions) <= compactionsHeldMax.
	compactions []Compaction

	// applied is the index of the last applied entry and appliedTerm its
	// term. Invariant: applied <= raft's committed index.
	applied     uint64
	appliedTerm uint64
	// confState is the configuration at applied.
	confState *raftpb.ConfState
	// staleSnapshots are the members whose MsgSnap Ready withheld, to be
	// reported failed at Advance.
	staleSnapshots []uint64
	// snap schedules snapshots.
	snap snapSchedule
	// err, once set, is returned by every Advance: the node is unusable.
	err error
	// viewStale is set when the store changed since the last view.
	viewStale bool
	// campaignAlone is set until a member that is its cluster's only voter
	// has started its first election, which it does as soon as it has
	// applied its log instead of after an election timeout.
	campaignAlone bool
}

// snapSchedule says when the next snapshot is due.
type snapSchedule struct {
	// entries is Config.SnapshotEntries (its default applied).
	entries uint64
	// index is the newest snapshot the log holds as its base or that the
	// host is making its base (a job reported done).
	index uint64
	// due is the applied index from which the next job is handed out.
	due uint64
	// inflight is the job handed out and not yet reported done.
	// Invariant: inflight.Meta.Index > index when it was handed out.
	inflight *SnapshotJob
	// logBytes is the data of the entries applied since the last job was
	// handed out, or the snapshot the node started from or installed, and
	// storeBytes what the store held then (Config.SnapshotPacedBytes).
	logBytes, storeBytes int64
}

// proposal is a request as this member proposed it: op encoded is data.
type proposal struct {
	data []byte
	op   *etcdserverpb.InternalRaftRequest
}

type deadline struct {
	id   ID
	tick uint64
}

// readBarriers batches linearizable reads: all barriers submitted while
// one ReadIndex request is in flight share the next one.
type readBarriers struct {
	// waiting are barriers not yet covered by a ReadIndex request.
	waiting []ID
	// inflight are the barriers covered by the ReadIndex request with
	// context inflightCtx, sent at tick inflightTick; inflightCtx is 0 when
	// none is in flight.
	inflight     []ID
	inflightCtx  uint64
	inflightTick uint64
	// ready are batches whose read index is known, waiting for apply to
	// reach it. Invariant: indexes are non-decreasing.
	ready []readBatch
}

type readBatch struct {
	index uint64
	ids   []ID
}

// NewNode starts a member's core on cfg.Log: it restores the state from
// the log's snapshot, bootstraps a new cluster if the log is empty, and
// lets raft replay the committed entries after the snapshot through Ready.
func NewNode(cfg Config) (*Node, error) {
	if cfg.ID == 0 {
		return nil, errors.New("engine: member ID must not be 0")
	}
	if cfg.Rand == nil {
		return nil, errors.New("engine: Config.Rand is required")
	}
	if cfg.RequestTimeoutTicks <= 0 || cfg.RequestBytesMax <= 0 {
		return nil, errors.New("engine: Config.RequestTimeoutTicks and RequestBytesMax must be positive")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	n := &Node{
		cfg:      cfg,
		log:      logger,
		store:    mvcc.New(),
		idNext:   cfg.Rand.Uint64(),
		pending:  make(map[ID]struct{}),
		proposed: make(map[ID]proposal),
		members:  newMembers(),
		leases:   newLessor(&cfg),
		auth:     newAuthState(),
	}
	snap, err := cfg.Log.Snapshot()
	if err != nil {
		return nil, fmt.Errorf("engine: reading the log's snapshot: %w", err)
	}
	meta := snap.GetMetadata()
	if meta.GetIndex() > 0 {
		st, err := n.loadSnapshot(meta)
		if err != nil {
			return nil, err
		}
		n.store, n.alarms, n.leases, n.members, n.auth = st.store, st.alarms, st.leases, st.members, st.auth
	}
	_, cs, err := cfg.Log.InitialState()
	if err != nil {
		return nil, fmt.Errorf("engine: reading the log's initial state: %w", err)
	}
	n.confState = cs
	n.applied, n.appliedTerm = meta.GetIndex(), meta.GetTerm()
	n.snap.entries = cfg.SnapshotEntries
	if n.snap.entries == 0 {
		n.snap.entries = snapshotEntriesDefault
	}
	n.snap.index = meta.GetIndex()
	n.snap.due = meta.GetIndex() + n.snap.entries
	n.snap.storeBytes = n.store.Bytes()
	last, err := cfg.Log.LastIndex()
	if err != nil {
		return nil, fmt.Errorf("engine: reading the log's last index: %w", err)
	}
	raw, err := raft.NewRawNode(&raft.Config{
		ID:                        cfg.ID,
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             cfg.HeartbeatTicks,
		Storage:                   cfg.Log,
		Applied:                   n.applied,
		MaxSizePerMsg:             raftMsgBytesMax,
		MaxInflightMsgs:           raftInflightMsgsMax,
		MaxUncommittedEntriesSize: raftUncommittedBytesMax,
		CheckQuorum:               true,
		PreVote:                   true,
		Logger:                    raftLogger{logger.Named("raft").WithOptions(zap.AddCallerSkip(1)).Sugar()},
	})
	if err != nil {
		return nil, fmt.Errorf("engine: starting raft: %w", err)
	}
	n.raw = raw
	if last == 0 && snap.GetMetadata().GetIndex() == 0 && !(cfg.Join && len(cfg.Bootstrap) == 0) {
		if len(cfg.Bootstrap) == 0 {
			return nil, errors.New("engine: empty log and no bootstrap members")
		}
		peers := make([]raft.Peer, len(cfg.Bootstrap))
		for i, p := range cfg.Bootstrap {
			peers[i] = raft.Peer{ID: p.ID, Context: p.Context}
		}
		if err := raw.Bootstrap(peers); err != nil {
			return nil, fmt.Errorf("engine: bootstrapping raft: %w", err)
		}
	}
	n.viewStale = true
	n.campaignAlone = true
	// A member restarted from a snapshot with nothing after it has nothing
	// to apply, so no Advance would start its election.
	n.maybeCampaignAlone()
	return n, nil
}

// Tick advances the member's logical clock by one tick.
func (n *Node) Tick() {
	n.ticks++
	n.raw.Tick()
	n.expireDeadlines()
	n.retryReadIndex()
	n.tickLeases()
}

// maybeCampaignAlone starts the first election of a member that is the
// only voter of its cluster once it has applied all it has committed
// (raft refuses to campaign with configuration changes still to apply).
func (n *Node) maybeCampaignAlone() {
	if !n.campaignAlone {
		return
	}
	st := n.raw.BasicStatus()
	if st.Applied < st.GetCommit() {
		return
	}
	n.campaignAlone = false
	voters := n.raw.Status().Config.Voters.IDs()
	if _, self := voters[n.cfg.ID]; len(voters) == 1 && self && st.Lead == raft.None {
		assert(n.raw.Campaign() == nil, "engine: member %x cannot campaign", n.cfg.ID)
	}
}

// Step hands the member a message from a peer.
func (n *Node) Step(m *raftpb.Message) error { return n.raw.Step(m) }

// Submit accepts a request; its answer comes out of a later Advance as a
// Response with the returned ID. An error means the request was refused
// and will never be answered.
func (n *Node) Submit(r Request) (ID, error) {
	if len(n.pending) >= requestsPendingMax {
		return 0, ErrTooManyRequests
	}
	id := n.newID()
	if r.ConfChange != nil {
		cc := proto.Clone(r.ConfChange).(*raftpb.ConfChange)
		cc.Id = new(uint64(id))
		if err := n.raw.ProposeConfChange(cc); err != nil {
			if errors.Is(err, raft.ErrProposalDropped) {
				return 0, ErrNoLeader
			}
			return 0, fmt.Errorf("engine: proposing: %w", err)
		}
	} else if r.Op == nil {
		if n.cfg.Bugs.ReadWithoutReadIndex {
			n.pending[id] = struct{}{}
			n.answer(Response{ID: id})
			return id, nil
		}
		n.reads.waiting = append(n.reads.waiting, id)
		n.maybeSendReadIndex()
	} else {
		// The user and the auth revision of its token stay: apply checks
		// them as etcd does.
		r.Op.Header = &etcdserverpb.RequestHeader{ID: uint64(id), Username: r.Op.GetHeader().GetUsername(), AuthRevision: r.Op.GetHeader().GetAuthRevision()}
		data, err := proto.Marshal(r.Op)
		if err != nil {
			return 0, fmt.Errorf("engine: encoding request: %w", err)
		}
		if len(data) > n.cfg.RequestBytesMax {
			return 0, ErrRequestTooLarge
		}
		if err := n.raw.Propose(data); err != nil {
			if errors.Is(err, raft.ErrProposalDropped) {
				return 0, ErrNoLeader
			}
			return 0, fmt.Errorf("engine: proposing: %w", err)
		}
		n.proposed[id] = proposal{data: data, op: r.Op}
	}
	n.pending[id] = struct{}{}
	n.deadlines = append(n.deadlines, deadline{id: id, tick: n.ticks + uint64(n.cfg.RequestTimeoutTicks)})
	return id, nil
}

func (n *Node) newID() ID {
	for {
		n.idNext++
		id := ID(n.idNext)
		if _, used := n.pending[id]; id != 0 && !used {
			return id
		}
	}
}

// HasReady reports whether Ready has work for the host.
func (n *Node) HasReady() bool {
	return len(n.outbox) > 0 || n.raw.HasReady()
}

// Ready returns the work the host must do now. Call it only when HasReady,
// and hand the result to Advance before calling Ready again.
func (n *Node) Ready() Ready {
	if !n.raw.HasReady() {
		return Ready{}
	}
	rd := n.raw.Ready()
	out := Ready{
		Entries:  rd.Entries,
		Snapshot: rd.Snapshot,
		MustSync: rd.MustSync,
		Messages: n.installableMessages(rd.Messages),
		raftRd:   &rd,
	}
	if !raft.IsEmptyHardState(rd.HardState) {
		out.HardState = rd.HardState
	}
	return out
}

// installableMessages withholds a MsgSnap whose snapshot predates its
// recipient: a member added after the log's newest snapshot is not in its
// configuration, and raft refuses to install it. The send is reported
// failed at Advance and a snapshot of the current state is made due, which
// raft sends when it tries again.
func (n *Node) installableMessages(msgs []*raftpb.Message) []*raftpb.Message {
	stale := func(m *raftpb.Message) bool {
		cs := m.GetSnapshot().GetMetadata().GetConfState()
		to := m.GetTo()
		return m.GetType() == raftpb.MsgSnap && !slices.Contains(cs.GetVoters(), to) && !slices.Contains(cs.GetLearners(), to) &&
			!slices.Contains(cs.GetVotersOutgoing(), to) && !slices.Contains(cs.GetLearnersNext(), to)
	}
	if !slices.ContainsFunc(msgs, stale) {
		return msgs
	}
	out := make([]*raftpb.Message, 0, len(msgs))
	for _, m := range msgs {
		if !stale(m) {
			out = append(out, m)
			continue
		}
		n.log.Info("the snapshot predates its recipient; making a newer one", zap.Uint64("to", m.GetTo()),
			zap.Uint64("snapshot-index", m.GetSnapshot().GetMetadata().GetIndex()))
		n.staleSnapshots = append(n.staleSnapshots, m.GetTo())
		n.requestSnapshot()
	}
	return out
}

// Advance tells the member that rd's persist part is durable and its
// messages are sent; it installs a received snapshot, applies the
// committed entries and returns the answers that are now due, and a
// snapshot job when one is due.
func (n *Node) Advance(rd Ready) Output {
	if n.err != nil {
		return Output{Err: n.err}
	}
	if rd.raftRd != nil {
		if rd.Snapshot != nil {
			if err := n.install(rd.Snapshot); err != nil {
				n.err = err
				return Output{Err: err}
			}
		}
		for _, rs := range rd.raftRd.ReadStates {
			n.readIndexAnswered(rs)
		}
		for _, ent := range rd.raftRd.CommittedEntries {
			if ent.GetIndex() > n.applied {
				n.apply(ent)
			}
		}
		if n.cfg.Bugs.ApplyUncommitted {
			for _, ent := range rd.raftRd.Entries {
				if ent.GetIndex() == n.applied+1 {
					n.apply(ent)
				}
			}
		}
		n.raw.Advance(*rd.raftRd)
		for _, to := range n.staleSnapshots {
			n.raw.ReportSnapshot(to, raft.SnapshotFailure)
		}
		n.staleSnapshots = nil
		n.isPrimary() // a deposed leader stops managing expiry at once
		n.releaseReads()
		n.maybeCampaignAlone()
	}
	n.compactStep()
	out := Output{Responses: n.outbox, Snapshot: n.maybeSnapshot(), Compactions: n.compactions, Tokens: n.tokens}
	n.outbox, n.compactions, n.tokens = nil, nil, nil
	if n.viewStale {
		out.View = n.store.View()
		n.viewStale = false
	}
	return out
}

// Status returns the member's current view of the cluster.
func (n *Node) Status() Status {
	rs := n.raw.BasicStatus()
	st := Status{
		ID:      n.cfg.ID,
		Leader:  rs.Lead,
		Term:    rs.GetTerm(),
		Commit:  rs.GetCommit(),
		Applied: n.applied,
		Bytes:   n.bytes(),
		Alarms:  n.alarms,
		Members: n.members.sorted(),
		Removed: n.isRemoved(),
		Auth:    n.auth,
	}
	if len(n.members.removed) > 0 {
		st.RemovedIDs = n.members.removedIDs()
	}
	return st
}

func (n *Node) isRemoved() bool {
	_, ok := n.members.removed[n.cfg.ID]
	return ok
}

// ReportUnreachable tells raft that the host could not send a message to
// member id, so a leader probes it again instead of streaming on.
func (n *Node) ReportUnreachable(id uint64) { n.raw.ReportUnreachable(id) }

// TransferLeader asks the leader to hand leadership to member to; the
// host watches Status().Leader for the outcome.
func (n *Node) TransferLeader(to uint64) { n.raw.TransferLeader(to) }

// LearnerReady says whether learner id has caught up enough with the
// leader's log to be promoted, as etcd decides it: its match index is at
// least learnerReadyPercent of the leader's. Only the leader knows.
func (n *Node) LearnerReady(id uint64) error {
	st := n.raw.Status()
	if st.Progress == nil {
		return ErrNotLeader
	}
	pr, ok := st.Progress[id]
	if !ok {
		return ErrMemberNotFound
	}
	if float64(pr.Match) < float64(st.Progress[n.cfg.ID].Match)*learnerReadyPercent {
		return ErrLearnerNotReady
	}
	return nil
}

// answer queues the response to request id if it is still pending.
func (n *Node) answer(r Response) {
	if _, ok := n.pending[r.ID]; !ok {
		return
	}
	delete(n.pending, r.ID)
	delete(n.proposed, r.ID)
	n.outbox = append(n.outbox, r)
}

// expireDeadlines answers ErrTimeout to every request whose deadline has
// passed.
func (n *Node) expireDeadlines() {
	for n.deadlinesHead < len(n.deadlines) && n.deadlines[n.deadlinesHead].tick <= n.ticks {
		n.answer(Response{ID: n.deadlines[n.deadlinesHead].id, Err: ErrTimeout})
		n.deadlinesHead++
	}
	// Reclaim the consumed prefix once it dominates, keeping appends O(1)
	// amortized and the slice bounded by the pending requests.
	if n.deadlinesHead > len(n.deadlines)/2 {
		n.deadlines = append(n.deadlines[:0], n.deadlines[n.deadlinesHead:]...)
		n.deadlinesHead = 0
	}
}

func (n *Node) maybeSendReadIndex() {
	if n.reads.inflightCtx != 0 || len(n.reads.waiting) == 0 {
		return
	}
	n.reads.inflight = n.reads.waiting
	n.reads.waiting = nil
	n.sendReadIndex()
}

func (n *Node) sendReadIndex() {
	n.reads.inflightCtx = uint64(n.newID())
	n.reads.inflightTick = n.ticks
	var ctx [8]byte
	binary.BigEndian.PutUint64(ctx[:], n.reads.inflightCtx)
	n.raw.ReadIndex(ctx[:])
}

// retryReadIndex asks again for a read index that went unanswered: raft
// drops ReadIndex requests while there is no leader.
func (n *Node) retryReadIndex() {
	if n.reads.inflightCtx != 0 && n.ticks-n.reads.inflightTick >= readIndexRetryTicks {
		n.sendReadIndex()
	}
}

func (n *Node) readIndexAnswered(rs raft.ReadState) {
	if len(rs.RequestCtx) != 8 || binary.BigEndian.Uint64(rs.RequestCtx) != n.reads.inflightCtx || n.reads.inflightCtx == 0 {
		return // an abandoned request answered late
	}
	if k := len(n.reads.ready); k > 0 {
		assert(n.reads.ready[k-1].index <= rs.Index, "engine: read index went back from %d to %d", n.reads.ready[k-1].index, rs.Index)
	}
	n.reads.ready = append(n.reads.ready, readBatch{index: rs.Index, ids: n.reads.inflight})
	n.reads.inflight = nil
	n.reads.inflightCtx = 0
	n.maybeSendReadIndex()
}

// releaseReads answers the barriers whose read index has been applied.
func (n *Node) releaseReads() {
	k := 0
	for ; k < len(n.reads.ready) && n.reads.ready[k].index <= n.applied; k++ {
		for _, id := range n.reads.ready[k].ids {
			n.answer(Response{ID: id})
		}
	}
	n.reads.ready = n.reads.ready[k:]
}

func (n *Node) compactStep() {
	if len(n.physicalWaiters) == 0 && n.store.CompactRev() == 0 {
		return
	}
	if n.store.CompactStep(compactVersionsPerAdvance) {
		for _, r := range n.physicalWaiters {
			n.answer(r)
		}
		n.physicalWaiters = nil
	}
}

func assert(cond bool, format string, args ...any) {
	if !cond {
		panic(fmt.Sprintf(format, args...))
	}
}
