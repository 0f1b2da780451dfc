package raftlog

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"strings"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/basaltdb/basalt/diskio"
)

// mstate is a model of the log's logical state: what raft.Storage serves,
// up to the snapshot the log starts after (which recovery may choose).
type mstate struct {
	// The log holds entries (floor, floor+len(log)]; floor and floorTerm
	// move only when a snapshot from a leader replaces the log.
	floor, floorTerm uint64
	log              []mentry
	hs               hardState
}

type mentry struct {
	term uint64
	data string
}

func (s mstate) clone() mstate {
	s.log = append([]mentry(nil), s.log...)
	return s
}

func (s mstate) last() uint64 { return s.floor + uint64(len(s.log)) }

func (s mstate) termAt(i uint64) (uint64, bool) {
	switch {
	case i == s.floor:
		return s.floorTerm, true
	case i < s.floor || i > s.last():
		return 0, false
	}
	return s.log[i-s.floor-1].term, true
}

func (s mstate) lastTerm() uint64 { t, _ := s.termAt(s.last()); return t }

// truncated is s without entries from i on.
func (s mstate) truncated(i uint64) mstate {
	s = s.clone()
	s.log = s.log[:i-s.floor-1]
	return s
}

func (s mstate) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "floor=%d/%d hs=%+v last=%d:", s.floor, s.floorTerm, s.hs, s.last())
	for i, e := range s.log {
		fmt.Fprintf(&b, " %d/%d", s.floor+1+uint64(i), e.term)
	}
	return b.String()
}

// msnap is a snapshot the workload committed.
type msnap struct {
	term uint64
	body string
}

// tb is what runner needs of testing.TB and rapid.T.
type tb interface {
	Fatalf(format string, args ...any)
}

// runner drives a seeded workload of raft-like Readies against a Log on a
// simulated disk and tracks the states recovery may legally return.
type runner struct {
	t    tb
	rng  *rand.Rand
	disk diskio.FS
	dir  string
	opts Options
	log  *Log
	// cur is the state if every operation so far succeeded.
	cur mstate
	// base is the Log's base snapshot index if every operation succeeded.
	base uint64
	// cands are the states a crash now may leave: the last acknowledged
	// state, then every state a prefix of the records written since can
	// produce.
	cands []mstate
	snaps map[uint64]msnap
	// lastSnap is the index of the last snapshot the workload wrote.
	lastSnap uint64
	// fired counts the operations that failed with ErrFailpoint.
	fired int
	// dataMax and snapMax bound the sizes of entry data and snapshot
	// bodies the workload draws.
	dataMax, snapMax int
}

func newRunner(t tb, seed uint64, disk diskio.FS, opts Options) *runner {
	return &runner{
		t:       t,
		rng:     rand.New(rand.NewPCG(seed, seed^0x5eed)),
		disk:    disk,
		dir:     envDir,
		opts:    opts,
		cands:   []mstate{{}},
		snaps:   make(map[uint64]msnap),
		dataMax: 200,
		snapMax: 3000,
	}
}

// ack makes s the last acknowledged state.
func (r *runner) ack(s mstate) { r.cands = []mstate{s} }

// maybe appends s to the candidates.
func (r *runner) maybe(s mstate) { r.cands = append(r.cands, s) }

// run opens the log and runs steps operations; it returns the first error
// (a crash or a failpoint), after which the Log is abandoned.
func (r *runner) run(steps int) error {
	l, err := Open(r.disk, r.dir, r.opts)
	if err != nil {
		return err
	}
	r.log = l
	for range steps {
		if err := r.step(); err != nil {
			if errors.Is(err, ErrFailpoint) {
				r.fired++
			}
			return err
		}
	}
	return nil
}

func (r *runner) step() error {
	switch n := r.rng.IntN(100); {
	case n < 55:
		return r.save()
	case n < 70:
		return r.commit()
	case n < 82:
		return r.snapshot()
	case n < 88:
		return r.applySnapshot()
	case n < 94:
		return r.overwrite()
	default:
		return r.reopen()
	}
}

func (r *runner) entries(first uint64, n int, term uint64) []*raftpb.Entry {
	out := make([]*raftpb.Entry, n)
	for i := range out {
		size := r.rng.IntN(4) * r.rng.IntN(r.dataMax)
		e := ent(first+uint64(i), term, 0)
		if size > 0 {
			e.Data = []byte(fmt.Sprintf("%d:%d:%s", first+uint64(i), term, strings.Repeat("x", size)))
		}
		out[i] = e
	}
	return out
}

// saveReady persists one Ready and records the states each prefix of its
// records leaves. In one segment: the hard state, then each entry (the
// first one truncating the log). When the Ready starts a segment, its
// header truncates the log before the hard state is written.
func (r *runner) saveReady(hs hardState, es []*raftpb.Entry, sync bool) error {
	prev := r.cur
	next := prev.clone()
	if hs != prev.hs {
		withHS := prev.clone()
		withHS.hs = hs
		r.maybe(withHS)
	}
	if len(es) > 0 {
		next = next.truncated(es[0].GetIndex())
		r.maybe(next)
	}
	if hs != next.hs {
		next.hs = hs
		r.maybe(next.clone())
	}
	for _, e := range es {
		next.log = append(next.log, mentry{term: e.GetTerm(), data: string(e.GetData())})
		r.maybe(next.clone())
	}
	r.cur = next
	var hsp *raftpb.HardState
	if hs != prev.hs {
		hsp = hs.proto()
	}
	if err := r.log.Save(hsp, es, sync); err != nil {
		return err
	}
	if sync {
		r.ack(next)
	}
	return nil
}

// save appends entries of the current term, sometimes starting a new
// term first, mostly with a sync.
func (r *runner) save() error {
	hs := r.cur.hs
	if hs.term == 0 || r.rng.IntN(8) == 0 {
		hs.term++
		hs.vote = 1 + r.rng.Uint64N(3)
	}
	es := r.entries(r.cur.last()+1, 1+r.rng.IntN(6), hs.term)
	return r.saveReady(hs, es, r.rng.IntN(6) != 0)
}

// commit advances the commit index alone: raft does not ask for a sync.
func (r *runner) commit() error {
	hs := r.cur.hs
	if hs.commit >= r.cur.last() {
		return r.save()
	}
	hs.commit += 1 + r.rng.Uint64N(r.cur.last()-hs.commit)
	return r.saveReady(hs, nil, false)
}

// overwrite is a new leader replacing the uncommitted suffix.
func (r *runner) overwrite() error {
	lo := max(r.cur.hs.commit, r.base, r.cur.floor) + 1
	if lo > r.cur.last() {
		return r.save()
	}
	hs := r.cur.hs
	hs.term++
	hs.vote = 1 + r.rng.Uint64N(3)
	first := lo + r.rng.Uint64N(r.cur.last()-lo+1)
	es := r.entries(first, 1+r.rng.IntN(4), hs.term)
	return r.saveReady(hs, es, true)
}

// snapshot takes a snapshot at a committed index and announces it.
func (r *runner) snapshot() error {
	lo := max(r.base, r.cur.floor) + 1
	if lo > r.cur.hs.commit {
		return r.save()
	}
	idx := lo + r.rng.Uint64N(r.cur.hs.commit-lo+1)
	term, _ := r.cur.termAt(idx)
	body := fmt.Sprintf("state@%d/%d:%s", idx, term, strings.Repeat("s", r.rng.IntN(r.snapMax)))
	meta := &raftpb.SnapshotMetadata{Index: new(idx), Term: new(term), ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}}}
	if err := r.writeSnapshot(meta, body); err != nil {
		return err
	}
	if err := r.log.SnapshotSaved(meta); err != nil {
		return err
	}
	r.base = idx
	return nil
}

func (r *runner) writeSnapshot(meta *raftpb.SnapshotMetadata, body string) error {
	w, err := r.log.CreateSnapshot(meta)
	if err != nil {
		return err
	}
	for chunk := range chunks(body, 700) {
		if _, err := io.WriteString(w, chunk); err != nil {
			return err
		}
	}
	// Registered before Commit: a crash after its rename may leave it.
	r.snaps[meta.GetIndex()] = msnap{term: meta.GetTerm(), body: body}
	r.lastSnap = meta.GetIndex()
	return w.Commit()
}

// chunks yields s in pieces of at most n bytes.
func chunks(s string, n int) func(func(string) bool) {
	return func(yield func(string) bool) {
		for len(s) > 0 {
			k := min(n, len(s))
			if !yield(s[:k]) {
				return
			}
			s = s[k:]
		}
	}
}

// applySnapshot is a snapshot from a leader ahead of the commit index,
// followed by the Ready's hard state.
func (r *runner) applySnapshot() error {
	idx := max(r.cur.hs.commit, r.base, r.cur.floor) + 1 + r.rng.Uint64N(8)
	term := max(r.cur.hs.term, r.cur.lastTerm(), 1)
	meta := &raftpb.SnapshotMetadata{Index: new(idx), Term: new(term), ConfState: &raftpb.ConfState{Voters: []uint64{1, 2}}}
	if err := r.writeSnapshot(meta, fmt.Sprintf("leader@%d/%d", idx, term)); err != nil {
		return err
	}
	after := mstate{floor: idx, floorTerm: term, hs: r.cur.hs}
	if after.hs.term < term {
		after.hs.term, after.hs.vote = term, 0
	}
	after.hs.commit = max(after.hs.commit, idx)
	r.maybe(after)
	r.cur = after
	if err := r.log.ApplySnapshot(meta); err != nil {
		return err
	}
	r.base = idx
	r.ack(after)
	hs := after.hs
	hs.vote = 1 + r.rng.Uint64N(3)
	return r.saveReady(hs, nil, true)
}

func (r *runner) reopen() error {
	if err := r.log.Close(); err != nil {
		return err
	}
	l, err := Open(r.disk, r.dir, r.opts)
	if err != nil {
		return err
	}
	r.log = l
	if d := r.diff(l, r.cur); d != "" {
		r.t.Fatalf("clean reopen differs from the model: %s", d)
	}
	// Recovery may pick a newer snapshot than the last one announced
	// (one committed before a crash); diff checked it fits.
	first, _ := l.FirstIndex()
	r.base = first - 1
	r.ack(r.cur)
	return nil
}

// diff compares what l serves with s; "" if it matches.
func (r *runner) diff(l *Log, s mstate) string {
	hs, _, err := l.InitialState()
	if err != nil {
		return err.Error()
	}
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	bi := first - 1
	if last != s.last() {
		return fmt.Sprintf("last %d, want %d", last, s.last())
	}
	want, ok := s.termAt(bi)
	if got, err := l.Term(bi); !ok || err != nil || got != want {
		return fmt.Sprintf("base %d has term %d (%v), model %d (%v)", bi, got, err, want, ok)
	}
	wantHS := s.hs
	wantHS.commit = min(max(wantHS.commit, bi), last)
	if got := hardStateOf(hs); got != wantHS {
		return fmt.Sprintf("hard state %+v, want %+v", got, wantHS)
	}
	if bi > 0 {
		ms, ok := r.snaps[bi]
		if !ok {
			return fmt.Sprintf("base %d is no snapshot the workload committed", bi)
		}
		meta, body, err := l.OpenSnapshot()
		if err != nil {
			return err.Error()
		}
		b, err := io.ReadAll(body)
		body.Close()
		if err != nil || string(b) != ms.body || meta.GetTerm() != ms.term {
			return fmt.Sprintf("snapshot %d: body %q (%v)", bi, b, err)
		}
	}
	if last > bi {
		es, err := l.Entries(first, last+1, ^uint64(0))
		if err != nil {
			return err.Error()
		}
		for i, e := range es {
			m := s.log[first+uint64(i)-s.floor-1]
			if e.GetIndex() != first+uint64(i) || e.GetTerm() != m.term || string(e.GetData()) != m.data {
				return fmt.Sprintf("entry %d: %d/%d %q, want %d/%q", first+uint64(i), e.GetIndex(), e.GetTerm(), e.GetData(), m.term, m.data)
			}
		}
	}
	return ""
}

// recoverAndCheck opens the log on disk (the state after a crash),
// requires it to equal one of the candidate states, then continues the
// workload from there for steps more operations (with a new seed) and
// requires a clean reopen to match the model: the recovered log keeps
// working, and nothing a recovery left behind comes back.
func (r *runner) recoverAndCheck(disk *diskio.Sim, what string, seed uint64, steps int) {
	l, err := Open(disk, envDir, r.opts)
	if err != nil {
		r.t.Fatalf("%s: recovery failed: %v\n%s", what, err, disk.Describe())
	}
	var diffs []string
	var matched *mstate
	for i, c := range r.cands {
		d := r.diff(l, c)
		if d == "" {
			matched = &r.cands[i]
			break
		}
		diffs = append(diffs, fmt.Sprintf("  %v\n    -> %s", c, d))
	}
	if matched == nil {
		r.t.Fatalf("%s: recovered log matches no state written since the last acknowledged one:\n%s\nrecovered:\n%s",
			what, strings.Join(diffs, "\n"), describeLog(l))
	}
	first, _ := l.FirstIndex()
	hs, _, _ := l.InitialState()
	c := &runner{
		t:       r.t,
		rng:     rand.New(rand.NewPCG(seed, 0xc0ffee)),
		disk:    disk,
		dir:     envDir,
		opts:    r.opts,
		log:     l,
		cur:     matched.clone(),
		base:    first - 1,
		snaps:   maps.Clone(r.snaps),
		dataMax: r.dataMax,
		snapMax: r.snapMax,
	}
	c.cur.hs = hardStateOf(hs)
	c.ack(c.cur)
	// A snapshot received but never applied before the crash stays on
	// disk; raft would never again make an entry with its index and term
	// but different contents, so the continuation starts a newer term.
	next := c.cur.hs
	for _, ms := range c.snaps {
		next.term = max(next.term, ms.term)
	}
	next.term++
	if err := c.saveReady(next, nil, true); err != nil {
		r.t.Fatalf("%s: save after recovery: %v", what, err)
	}
	for range steps {
		if err := c.step(); err != nil {
			r.t.Fatalf("%s: workload after recovery: %v", what, err)
		}
	}
	if err := c.reopen(); err != nil {
		r.t.Fatalf("%s: reopen after recovery: %v", what, err)
	}
	if err := c.log.Close(); err != nil {
		r.t.Fatalf("%s: close after recovery: %v", what, err)
	}
}
