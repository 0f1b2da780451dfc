package sim

import (
	"fmt"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// network carries raft messages between members: each message gets its
// own delay, so messages reorder; it may be dropped or duplicated; links
// may be cut (partitions, symmetric or one-way) or clogged (held, then
// delivered together).
type network struct {
	w   *World
	rng rng
	o   NetOptions
	// blocked[from][to] cuts the link from one member to another.
	blocked [][]bool
	// clogUntil[from][to] holds the link's messages until then.
	clogUntil [][]time.Duration
	// partitionSince is when the current partition began; zero when none.
	partitioned    bool
	partitionSince time.Duration
}

func newNetwork(w *World) *network {
	n := &network{w: w, rng: newRNG(w.opts.Seed, streamNet), o: w.opts.Net}
	for range w.opts.Members {
		n.blocked = append(n.blocked, make([]bool, w.opts.Members))
		n.clogUntil = append(n.clogUntil, make([]time.Duration, w.opts.Members))
	}
	return n
}

// grow adds the links of a member added to the cluster.
func (n *network) grow() {
	for i := range n.blocked {
		n.blocked[i] = append(n.blocked[i], false)
		n.clogUntil[i] = append(n.clogUntil[i], 0)
	}
	k := len(n.blocked) + 1
	n.blocked = append(n.blocked, make([]bool, k))
	n.clogUntil = append(n.clogUntil, make([]time.Duration, k))
}

// send puts a message from member from on the wire; body is the snapshot
// body of a MsgSnap.
func (n *network) send(from int, msg *raftpb.Message, body []byte) {
	to := int(msg.GetTo()) - 1
	if to < 0 || to >= len(n.blocked) || to == from {
		panic(fmt.Sprintf("sim: member %d sent %v to member %d", from+1, msg.GetType(), msg.GetTo()))
	}
	w := n.w
	w.stats.Messages++
	w.mix(uint64(from), uint64(to), uint64(msg.GetType()), msg.GetTerm(), msg.GetIndex(), msg.GetLogTerm(),
		msg.GetCommit(), uint64(len(msg.GetEntries())))
	sender := w.members[from]
	if n.blocked[from][to] || n.rng.chance(n.o.DropPPM) {
		w.stats.Dropped++
		w.disturb(w.now, w.now)
		if msg.GetType() == raftpb.MsgSnap {
			sender.snapshotReport(msg.GetTo(), sender.incarnation, false)
		}
		return
	}
	n.schedule(sender, to, msg, body)
	// A forwarded proposal is never duplicated (see NetOptions.DupPPM), nor
	// a snapshot, whose transport is a stream of its own.
	if t := msg.GetType(); t != raftpb.MsgProp && t != raftpb.MsgSnap && n.rng.chance(n.o.DupPPM) {
		n.schedule(sender, to, proto.Clone(msg).(*raftpb.Message), nil)
	}
}

// delay draws one message's transit time.
func (n *network) delay() time.Duration {
	return n.o.DelayMin + n.rng.expish(n.o.DelayMean)
}

func (n *network) schedule(sender *member, to int, msg *raftpb.Message, body []byte) {
	from, inc := sender.idx, sender.incarnation
	at := n.w.now + n.delay()
	if c := n.clogUntil[from][to]; c > at {
		at = c + n.rng.dur(0, time.Millisecond)
	}
	n.w.at(at, evDeliver, to, func() {
		if n.blocked[from][to] {
			n.w.stats.Dropped++
			if msg.GetType() == raftpb.MsgSnap {
				sender.snapshotReport(msg.GetTo(), inc, false)
			}
			return
		}
		n.w.members[to].deliver(sender, inc, msg, body)
	})
}

// nemesis starts and heals partitions and clogs links, once a second.
func (n *network) nemesis() {
	members := len(n.blocked)
	if members < 2 {
		return
	}
	switch {
	case !n.partitioned && n.rng.chance(n.o.PartitionPPM):
		n.partition()
	case n.partitioned && n.w.now-n.partitionSince >= time.Second && n.rng.chance(n.o.HealPPM):
		n.heal()
	}
	for from := range members {
		for to := range members {
			if from != to && n.rng.chance(n.o.ClogPPM) {
				n.clogUntil[from][to] = n.w.now + n.rng.expish(n.o.ClogMean)
				n.w.disturb(n.w.now, n.clogUntil[from][to])
			}
		}
	}
}

// partition splits the members in two: one member alone or a random
// split; one-way with AsymmetricPPM (side a cannot reach side b, b still
// reaches a).
func (n *network) partition() {
	members := len(n.blocked)
	side := make([]bool, members)
	if n.rng.intN(2) == 0 {
		side[n.rng.intN(uint64(members))] = true
	} else {
		for {
			count := 0
			for i := range side {
				side[i] = n.rng.intN(2) == 0
				if side[i] {
					count++
				}
			}
			if count > 0 && count < members {
				break
			}
		}
	}
	oneWay := n.rng.chance(n.o.AsymmetricPPM)
	for a := range members {
		for b := range members {
			if side[a] && !side[b] || !oneWay && !side[a] && side[b] {
				n.blocked[a][b] = true
			}
		}
	}
	n.partitioned, n.partitionSince = true, n.w.now
	n.w.stats.Partitions++
	n.w.mix(uint64(evNemesis), 1, boolWord(oneWay))
	for i, s := range side {
		n.w.mix(uint64(i), boolWord(s))
	}
}

// heal reconnects every link.
func (n *network) heal() {
	for _, row := range n.blocked {
		clear(row)
	}
	if n.partitioned {
		n.w.disturb(n.partitionSince, n.w.now)
	}
	n.partitioned = false
	n.w.mix(uint64(evHeal))
}

// calm ends every network fault for the liveness phase: links heal and
// unclog, and messages are neither dropped nor duplicated.
func (n *network) calm() {
	n.heal()
	for _, row := range n.clogUntil {
		clear(row)
	}
	n.o.DropPPM, n.o.DupPPM, n.o.ClogPPM, n.o.PartitionPPM = 0, 0, 0, 0
	n.o.DelayMin, n.o.DelayMean = 0, time.Millisecond
}

func boolWord(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
