package sim

import (
	"fmt"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// liveness is the phase after the faults (TigerBeetle's liveness mode): a
// core of a majority is restarted, unpaused and fully connected, with fast
// faultless disks and network; the members outside it stay down for good.
// The core must then elect a leader, commit a probe write, answer every
// client and converge to one state within livenessBound.
type liveness struct {
	core     []bool
	deadline time.Duration
	probe    *op
}

// startLiveness ends the safety phase.
func (w *World) startLiveness() {
	w.phase = phaseLiveness
	healthy, joinCore := w.ops.coreCandidates()
	if len(healthy) < w.quorum() {
		w.fail("fault model", fmt.Sprintf("only %d of %d voters' disks are intact: the simulator corrupted a majority", len(healthy), w.ops.voterCount()))
		return
	}
	// A random core of at least a majority of the intact members.
	for i := len(healthy) - 1; i > 0; i-- {
		j := w.fault.intN(uint64(i + 1))
		healthy[i], healthy[j] = healthy[j], healthy[i]
	}
	size := int(w.fault.between(int64(w.quorum()), int64(len(healthy))))
	deadline := w.now + livenessBound
	if w.opts.Work.Lease.Clients > 0 {
		// Every lease must be revoked too: once the core has a leader, a
		// lease no one keeps alive expires within its TTL plus the
		// promotion's extension, and its revoke commits within a retry.
		deadline += time.Duration(w.opts.Work.Lease.TTLMax)*time.Second + leaseLateBound
	}
	w.live = &liveness{core: make([]bool, len(w.members)), deadline: deadline}
	for _, i := range append(healthy[:size], joinCore...) {
		w.live.core[i] = true
		w.mix(uint64(evLiveness), uint64(i))
	}
	w.net.calm()
	for i, m := range w.members {
		if !w.live.core[i] {
			m.stop()
			continue
		}
		m.inj.calm = true
		if m.up {
			if m.ioBusy {
				// The disk is fast now: a slow fsync in flight ends too.
				m.scheduleIODone(time.Millisecond)
			}
			m.resume()
		} else {
			w.after(time.Millisecond, evRestart, i, m.restart)
		}
	}
	w.live.probe = &op{id: len(w.work.ops), client: -1, kind: opPut, key: "probe",
		write: &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("probe"), Value: []byte("probe")}}}
	w.work.ops = append(w.work.ops, w.live.probe)
	w.after(time.Millisecond, evLiveness, -1, w.sendProbe)
	w.after(livenessPoll, evLiveness, -1, w.pollLiveness)
}

// sendProbe sends the probe write to a core member, again until answered.
func (w *World) sendProbe() {
	p := w.live.probe
	if p.done || w.phase != phaseLiveness {
		return
	}
	var core []int
	for i, in := range w.live.core {
		if in {
			core = append(core, i)
		}
	}
	a := &attempt{op: p, member: core[w.fault.intN(uint64(len(core)))], sent: w.now}
	p.attempts = append(p.attempts, a)
	m := w.members[a.member]
	w.after(clientLinkDelayMin, evClient, a.member, func() { m.request(a) })
	w.after(time.Second, evClientTimeout, -1, func() {
		if a.state == attemptPending {
			a.state, a.answered = attemptIndefinite, w.now
		}
		if a.state != attemptOK {
			w.sendProbe()
		}
	})
}

func (w *World) pollLiveness() {
	if w.phase != phaseLiveness {
		return
	}
	n := 0
	for i, in := range w.live.core {
		if in && w.ops.dropFromCore(i) {
			// Rot found in the core: an operator would replace the member.
			// Or the member was removed by a change committed late.
			w.live.core[i] = false
		}
		if w.live.core[i] && w.ops.isVoter(i) {
			n++
		}
	}
	if n < w.quorum() || !w.coreCanElect() {
		// Too many disks found rotten to keep a majority: the run is not
		// recoverable, and liveness is not required of it.
		w.stats.Unrecoverable = true
		w.finish()
		return
	}
	why := w.pendingConvergence()
	if why == "" {
		w.finish()
		return
	}
	if w.now >= w.live.deadline {
		w.fail("liveness", fmt.Sprintf("the core %v did not converge within %v of healing: %s", w.coreIDs(), livenessBound, why))
		return
	}
	w.after(livenessPoll, evLiveness, -1, w.pollLiveness)
}

func (w *World) coreIDs() []uint64 {
	var ids []uint64
	for i, in := range w.live.core {
		if in {
			ids = append(ids, uint64(i+1))
		}
	}
	return ids
}

// pendingConvergence says what the core still lacks; empty when it has
// converged.
func (w *World) pendingConvergence() string {
	p := w.live.probe
	if !p.done {
		for _, a := range p.attempts {
			if a.state == attemptOK {
				p.done = true
			}
		}
	}
	if !p.done {
		return "the probe write is not acknowledged; " + w.coreStatus()
	}
	if n := w.work.pending(); n > 0 {
		return fmt.Sprintf("%d client operations are unanswered", n)
	}
	var leader, term, commit uint64
	var hash uint32
	first := true
	var notes []string
	for i, in := range w.live.core {
		if !in {
			continue
		}
		m := w.members[i]
		if !m.up || m.paused() || m.view == nil {
			return fmt.Sprintf("member %d is not running", m.id)
		}
		st := m.node.Status()
		h, _, err := m.view.HashKV(0)
		if err != nil {
			return fmt.Sprintf("member %d: HashKV: %v", m.id, err)
		}
		if first {
			leader, term, commit, hash, first = st.Leader, st.Term, st.Commit, h, false
		}
		if st.Leader == 0 || st.Leader != leader || st.Term != term {
			notes = append(notes, fmt.Sprintf("member %d sees leader %d in term %d", m.id, st.Leader, st.Term))
		}
		if st.Applied != st.Commit || st.Commit != commit || h != hash {
			notes = append(notes, fmt.Sprintf("member %d applied %d of commit %d, hash %08x", m.id, st.Applied, st.Commit, h))
		}
	}
	if leader != 0 && !w.live.core[leader-1] {
		notes = append(notes, fmt.Sprintf("leader %d is outside the core", leader))
	}
	if len(notes) == 0 {
		notes = w.pendingLeases()
	}
	return strings.Join(notes, "; ")
}

// pendingLeases lists the leases not revoked yet: no client keeps any
// alive in the liveness phase, so every one must expire.
func (w *World) pendingLeases() []string {
	var notes []string
	if ids := w.chk.model.leaseIDs(); len(ids) > 0 {
		notes = append(notes, fmt.Sprintf("leases %v are not revoked", ids))
	}
	for i, in := range w.live.core {
		if !in {
			continue
		}
		if ids := w.members[i].node.Leases(); len(ids) > 0 {
			notes = append(notes, fmt.Sprintf("member %d holds leases %v", i+1, ids))
		}
	}
	return notes
}

// coreStatus describes the core members' raft state.
func (w *World) coreStatus() string {
	var parts []string
	for i, in := range w.live.core {
		m := w.members[i]
		switch {
		case !in:
		case !m.up:
			parts = append(parts, fmt.Sprintf("member %d down", m.id))
		default:
			st := m.node.Status()
			parts = append(parts, fmt.Sprintf("member %d leader=%d term=%d commit=%d applied=%d", m.id, st.Leader, st.Term, st.Commit, st.Applied))
		}
	}
	return strings.Join(parts, ", ")
}

// coreCanElect reports whether some running core member could win an
// election with the core's votes under the configuration it has applied:
// raft takes a configuration at apply, so when rot drops a member from the
// core after a change of the voters committed that the core has not applied
// (seed 7200), a majority of the new voters may be no majority of the old.
// It says yes while a core member is not running, whose table it cannot
// read yet.
func (w *World) coreCanElect() bool {
	for i, in := range w.live.core {
		if m := w.members[i]; in && !m.failed && (!m.up || m.node == nil) {
			return true
		}
	}
	for i, in := range w.live.core {
		m := w.members[i]
		if !in || m.failed {
			continue
		}
		voters, votes, candidate := 0, 0, false
		for _, mb := range m.node.Status().Members {
			if mb.IsLearner {
				continue
			}
			voters++
			j := int(mb.ID) - 1
			if j == i {
				candidate = true
			}
			if j >= 0 && j < len(w.live.core) && w.live.core[j] && !w.members[j].failed {
				votes++
			}
		}
		if candidate && votes > voters/2 {
			return true
		}
	}
	return false
}

// finish ends a converged run with the checks on the whole history.
func (w *World) finish() {
	for i, in := range w.live.core {
		if !in || w.stats.Unrecoverable {
			continue
		}
		m := w.members[i]
		if !w.chk.observeLog(m, m.node.Status().Commit) {
			return
		}
		w.chk.checkState(m)
		if w.failure != nil {
			return
		}
	}
	w.phase = phaseDone
	if !w.stats.Unrecoverable {
		w.chk.final()
		if w.failure == nil {
			w.watch.final()
		}
	}
}
