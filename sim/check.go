package sim

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/engine"
)

// checker holds the run's oracles and checks every member against them
// as it goes (cheap checks after every Advance) and at the end (client
// histories).
type checker struct {
	w *World
	// committed is the committed log: committed[i] is entry i+1, set once
	// by the first member seen to have it committed; every member must
	// agree.
	committed []committedEntry
	// committedAt[i] is when the oracle first saw entry i+1 committed.
	committedAt []time.Duration
	// model replays committed in order; revAt[i] is its revision after
	// entry i+1.
	model *model
	revAt []int64
	// byID is the model's answer to each committed request, by engine ID.
	byID map[uint64]modelResult
	// compactions lists the committed compactions that succeeded.
	compactions []modelCompaction
	// leaders maps a term to the member that led it.
	leaders map[uint64]uint64
	// hashes maps an applied index to the state hash sampled there.
	hashes map[uint64]stateHash
	// gens are the lives of each lease ID in the committed log, oldest
	// first (leasecheck.go).
	gens map[int64][]*leaseGen
	// renewals are the times a member renewed each lease.
	renewals map[int64][]time.Duration
}

type committedEntry struct {
	term uint64
	typ  raftpb.EntryType
	data []byte
}

type modelResult struct {
	index uint64
	resp  proto.Message
	err   error
}

// modelCompaction is a compaction to rev, applied when the store was at
// revision at.
type modelCompaction struct{ rev, at int64 }

type stateHash struct {
	member           uint64
	hash             uint32
	rev, compactRev  int64
	sampledAt        time.Duration
	applied, entries uint64
}

func newChecker(w *World) *checker {
	return &checker{
		w:        w,
		model:    newModel(),
		byID:     map[uint64]modelResult{},
		leaders:  map[uint64]uint64{},
		hashes:   map[uint64]stateHash{},
		gens:     map[int64][]*leaseGen{},
		renewals: map[int64][]time.Duration{},
	}
}

// afterAdvance runs the per-Ready invariants on member m.
func (c *checker) afterAdvance(m *member) {
	w := c.w
	st := m.node.Status()
	if st.Leader == m.id {
		l, ok := c.leaders[st.Term]
		if ok && l != m.id {
			w.fail("election safety", fmt.Sprintf("members %d and %d both led term %d", l, m.id, st.Term))
			return
		}
		if !ok {
			// A new leader: the cluster had none for a while, and it
			// extends every lease.
			w.disturb(w.now, w.now)
		}
		c.leaders[st.Term] = m.id
	}
	if !c.observeLog(m, m.durableCommit) {
		return
	}
	applied := st.Applied
	if m.view == nil || applied == 0 || applied > uint64(len(c.committed)) {
		return
	}
	if want := c.revAt[applied-1]; m.view.Rev() != want {
		w.fail("revision", fmt.Sprintf("member %d is at revision %d after applying index %d; the committed log gives %d",
			m.id, m.view.Rev(), applied, want))
		return
	}
	if w.now-m.lastHash >= hashInterval {
		m.lastHash = w.now
		c.sampleHash(m, applied)
	}
}

// sampleHash compares m's state hash with the one sampled at the same
// applied index on another member.
func (c *checker) sampleHash(m *member, applied uint64) {
	h, crev, err := m.view.HashKV(0)
	if err != nil {
		c.w.fail("state hash", fmt.Sprintf("member %d: HashKV: %v", m.id, err))
		return
	}
	s := stateHash{member: m.id, hash: h, rev: m.view.Rev(), compactRev: crev, sampledAt: c.w.now, applied: applied}
	prev, ok := c.hashes[applied]
	if !ok {
		c.hashes[applied] = s
		return
	}
	if prev.hash != s.hash || prev.rev != s.rev || prev.compactRev != s.compactRev {
		c.w.fail("state hash", fmt.Sprintf("at applied index %d member %d has hash %08x rev %d compact %d (at %v), member %d has %08x rev %d compact %d (at %v)",
			applied, prev.member, prev.hash, prev.rev, prev.compactRev, prev.sampledAt, m.id, s.hash, s.rev, s.compactRev, s.sampledAt))
	}
}

// observeLog compares m's committed entries up to commit with the
// committed-log oracle, extending it. It reports false if it stopped the
// member or the run.
func (c *checker) observeLog(m *member, commit uint64) bool {
	last, err := m.log.LastIndex()
	if err != nil {
		m.failStop(err)
		return false
	}
	upto := min(commit, last)
	if upto <= m.checked {
		return true
	}
	first, err := m.log.FirstIndex()
	if err != nil {
		m.failStop(err)
		return false
	}
	lo := max(m.checked+1, first)
	ents, err := m.log.Entries(lo, upto+1, math.MaxUint64)
	m.disk.TakeLatency()
	if err != nil {
		m.failStop(err)
		return false
	}
	for _, e := range ents {
		if !c.observe(m, e) {
			return false
		}
	}
	m.checked = upto
	return true
}

func (c *checker) observe(m *member, e *raftpb.Entry) bool {
	i := e.GetIndex()
	n := uint64(len(c.committed))
	switch {
	case i <= n:
		ce := c.committed[i-1]
		if ce.term != e.GetTerm() || ce.typ != e.GetType() || !bytes.Equal(ce.data, e.GetData()) {
			c.w.fail("committed log", fmt.Sprintf("member %d has entry %d of term %d (%d bytes %x), the committed one is of term %d (%d bytes %x)",
				m.id, i, e.GetTerm(), len(e.GetData()), prefix(e.GetData()), ce.term, len(ce.data), prefix(ce.data)))
			return false
		}
		return true
	case i > n+1:
		c.w.fail("committed log", fmt.Sprintf("member %d committed entry %d, the committed log ends at %d", m.id, i, n))
		return false
	}
	c.committed = append(c.committed, committedEntry{term: e.GetTerm(), typ: e.GetType(), data: e.GetData()})
	c.committedAt = append(c.committedAt, c.w.now)
	c.w.mix(i, e.GetTerm(), uint64(len(e.GetData())))
	if e.GetType() == raftpb.EntryNormal && len(e.GetData()) > 0 {
		req := &pb.InternalRaftRequest{}
		if err := proto.Unmarshal(e.GetData(), req); err != nil {
			c.w.fail("committed log", fmt.Sprintf("entry %d (from member %d) does not decode: %v", i, m.id, err))
			return false
		}
		// A request of the member's own (a revoke of an expired lease, a
		// checkpoint) has ID 0; a client's has the ID it was submitted
		// under.
		id := req.GetHeader().GetID()
		if prev, ok := c.byID[id]; ok && id != 0 {
			c.w.fail("committed log", fmt.Sprintf("request %x committed twice, at %d and %d", id, prev.index, i))
			return false
		}
		before := c.model.rev
		resp, err := c.model.apply(req)
		if req.Compaction != nil && err == nil {
			c.compactions = append(c.compactions, modelCompaction{rev: req.Compaction.Revision, at: before})
		}
		if id != 0 {
			c.byID[id] = modelResult{index: i, resp: resp, err: err}
		}
		if err == nil {
			c.observeLease(i, id, req, resp)
		}
	}
	if e.GetType() == raftpb.EntryConfChange && !c.w.ops.observe(e) {
		return false
	}
	c.revAt = append(c.revAt, c.model.rev)
	return true
}

func prefix(b []byte) []byte {
	if len(b) > 16 {
		return b[:16]
	}
	return b
}

// final runs the checks on the whole history, after the liveness phase.
func (c *checker) final() {
	c.checkAnswers()
	if c.w.failure != nil {
		return
	}
	c.w.ops.check()
	if c.w.failure != nil {
		return
	}
	c.checkRealTime()
	if c.w.failure != nil {
		return
	}
	c.checkPorcupine()
	if c.w.failure != nil {
		return
	}
	c.checkLeases()
}

// checkAnswers is the log-order oracle: every answer a client got must be
// the one the committed log gives.
func (c *checker) checkAnswers() {
	for _, o := range c.w.work.ops {
		for _, a := range o.attempts {
			if a.state != attemptOK || o.write == nil && o.read == nil {
				continue // keepalives and TTLs: checkLeases
			}
			if o.write != nil {
				c.checkWrite(o, a)
			} else {
				c.checkRead(o, a)
			}
			if c.w.failure != nil {
				return
			}
		}
	}
}

func (c *checker) checkWrite(o *op, a *attempt) {
	mr, ok := c.byID[uint64(a.id)]
	if !ok {
		c.w.fail("durability", fmt.Sprintf("%s answered %s at %v by member %d is not in the committed log (%d entries)",
			describeOp(o), describeAnswer(a), a.answered, a.member+1, len(c.committed)))
		return
	}
	if errClass(a.err) != errClass(mr.err) || a.err == nil && describe(a.resp) != describe(mr.resp) {
		c.w.fail("log-order oracle", fmt.Sprintf("%s (entry %d) answered %s by member %d at %v; the committed log gives %s",
			describeOp(o), mr.index, describeAnswer(a), a.member+1, a.answered, describeResult(mr.resp, mr.err)))
	}
}

func (c *checker) checkRead(o *op, a *attempt) {
	req := o.read
	if a.err != nil {
		ok := false
		switch errClass(a.err) {
		case 1:
			for _, cp := range c.compactions {
				ok = ok || cp.rev > req.Revision && cp.at <= a.viewRev
			}
		case 2:
			ok = req.Revision > a.viewRev
		}
		if !ok {
			c.w.fail("log-order oracle", fmt.Sprintf("%s answered %s by member %d at %v from a view at revision %d",
				describeOp(o), describeAnswer(a), a.member+1, a.answered, a.viewRev))
		}
		return
	}
	if a.viewRev > c.model.rev {
		c.w.fail("log-order oracle", fmt.Sprintf("%s was served at revision %d; the committed log reaches %d", describeOp(o), a.viewRev, c.model.rev))
		return
	}
	want, err := c.model.rangeAt(req, a.viewRev, 0)
	if err != nil || describe(want) != describe(a.resp) {
		c.w.fail("log-order oracle", fmt.Sprintf("%s answered %s by member %d at %v; the committed log gives %s at that revision",
			describeOp(o), describeAnswer(a), a.member+1, a.answered, describeResult(want, err)))
	}
}

// checkRealTime checks that no linearizable answer shows a revision older
// than one a client had been given before it asked.
func (c *checker) checkRealTime() {
	type acked struct {
		at  time.Duration
		rev int64
		a   *attempt
	}
	var done []acked
	var asked []*attempt
	for _, o := range c.w.work.ops {
		if o.serializable {
			continue
		}
		for _, a := range o.attempts {
			if a.state == attemptOK && a.err == nil {
				done = append(done, acked{a.answered, responseRev(a.resp), a})
				asked = append(asked, a)
			}
		}
	}
	slices.SortStableFunc(done, func(x, y acked) int { return cmp.Compare(x.at, y.at) })
	slices.SortStableFunc(asked, func(x, y *attempt) int { return cmp.Compare(x.sent, y.sent) })
	var best acked
	j := 0
	for _, a := range asked {
		for ; j < len(done) && done[j].at < a.sent; j++ {
			if done[j].rev > best.rev {
				best = done[j]
			}
		}
		if rev := responseRev(a.resp); rev < best.rev {
			c.w.fail("linearizability", fmt.Sprintf("%s sent at %v to member %d got revision %d, but %s had been answered revision %d at %v",
				describeOp(a.op), a.sent, a.member+1, rev, describeOp(best.a.op), best.rev, best.at))
			return
		}
	}
}

// checkState compares a converged member's whole state with the model.
func (c *checker) checkState(m *member) {
	all := &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}
	got, err := engine.Range(m.view, all)
	if err != nil {
		c.w.fail("final state", fmt.Sprintf("member %d: %v", m.id, err))
		return
	}
	want, _ := c.model.rangeAt(all, c.model.rev, 0)
	if describe(got) != describe(want) {
		c.w.fail("final state", fmt.Sprintf("member %d holds %s; the committed log gives %s", m.id, describe(got), describe(want)))
	}
}

func describeOp(o *op) string {
	var what string
	switch {
	case o.kind == opLease:
		what = describeLeaseOp(o)
	case o.write != nil && o.write.Put != nil:
		p := o.write.Put
		what = fmt.Sprintf("put %s=%s", p.Key, p.Value)
	case o.write != nil && o.write.DeleteRange != nil && len(o.write.DeleteRange.RangeEnd) == 0:
		what = fmt.Sprintf("del %s", o.write.DeleteRange.Key)
	case o.write != nil && o.write.DeleteRange != nil:
		d := o.write.DeleteRange
		what = fmt.Sprintf("del [%s, %s)", d.Key, d.RangeEnd)
	case o.write != nil && o.write.Txn != nil:
		t := o.write.Txn
		what = fmt.Sprintf("txn if mod(%s)==%d put %s", t.Compare[0].Key, t.Compare[0].GetModRevision(), t.Success[0].GetRequestPut().Value)
	case o.write != nil && o.write.Compaction != nil:
		what = fmt.Sprintf("compact %d", o.write.Compaction.Revision)
	case len(o.read.RangeEnd) == 0:
		r := o.read
		what = fmt.Sprintf("get %s rev=%d serializable=%t", r.Key, r.Revision, r.Serializable)
	default:
		r := o.read
		what = fmt.Sprintf("range [%s, %s) rev=%d limit=%d serializable=%t", r.Key, r.RangeEnd, r.Revision, r.Limit, r.Serializable)
	}
	return fmt.Sprintf("op %d of client %d (%s)", o.id, o.client, what)
}

func describeAnswer(a *attempt) string { return describeResult(a.resp, a.err) }

func describeResult(resp proto.Message, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	return describe(resp)
}
