package sim

import (
	"fmt"
	"strings"
	"time"
)

// Options are one run's configuration. Draw makes them from a seed (swarm
// testing: every seed explores its own mix of faults and load); tests may
// adjust them before Run.
type Options struct {
	Seed uint64
	// Members is the cluster size: 1, 3 or 5.
	Members int
	// Safety is how long faults are injected and clients run; the liveness
	// phase follows.
	Safety time.Duration

	Net    NetOptions
	Disk   DiskOptions
	Faults FaultOptions
	Work   WorkOptions
	// Operator changes the membership.
	Operator OperatorOptions
	// Bugs plants known bugs; Draw leaves them off.
	Bugs Bugs
}

// NetOptions are the peer network's faults. Probabilities are in parts per
// million: per message, or per second where named so.
type NetOptions struct {
	// A message takes DelayMin plus a draw of mean DelayMean.
	DelayMin, DelayMean time.Duration
	DropPPM             uint32
	// DupPPM delivers a second copy at an independent delay. Proposals
	// forwarded to the leader are never duplicated: raft has no way to
	// tell a duplicate proposal, and a stream transport does not make one.
	DupPPM uint32
	// PartitionPPM (per second) starts a partition, HealPPM (per second)
	// ends it; AsymmetricPPM makes a partition one-way.
	PartitionPPM, HealPPM, AsymmetricPPM uint32
	// ClogPPM (per link per second) stalls a link for a draw of mean
	// ClogMean: its messages arrive together when it clears.
	ClogPPM  uint32
	ClogMean time.Duration
}

// DiskOptions are the members' disks.
type DiskOptions struct {
	// SyncMean is the mean fsync latency; GrayPPM of fsyncs take a hundred
	// times longer (a slow, not failed, disk).
	SyncMean time.Duration
	GrayPPM  uint32
	// Faulty lists the members (indexes) whose disks fail and rot; at most
	// a minority, so the cluster can survive them.
	Faulty []int
	// On faulty disks, per op: writes and fsyncs fail with EIO, reads fail
	// with EIO, reads of WAL segments flip a bit (bit rot the WAL's CRC must
	// catch). A rotting disk's member keeps no entry cache, so that raft
	// reads its entries back from the WAL.
	WriteErrPPM, ReadErrPPM, RotPPM uint32
	// SegmentBytes and EntryCacheBytes are the raftlog options (0: its
	// default).
	SegmentBytes, EntryCacheBytes int64
	// SnapshotEntries is the engine's snapshot count (0: its default);
	// a small one is snapshot pressure: logs are compacted often and
	// lagging members catch up from a snapshot.
	SnapshotEntries uint64
}

// FaultOptions are process and clock faults.
type FaultOptions struct {
	// CrashPPM (per member per second) kills a member; it restarts after a
	// draw of mean RestartMean, or within half a second with FastRestartPPM.
	CrashPPM       uint32
	RestartMean    time.Duration
	FastRestartPPM uint32
	// CrashSitePPM kills a member right after it acted on a Ready that
	// changed its term or vote (etcd's raftAfterSave crash point).
	CrashSitePPM uint32
	// PausePPM (per member per second) freezes a member for a draw of mean
	// PauseMean; time goes on (a GC or VM pause).
	PausePPM  uint32
	PauseMean time.Duration
	// DriftPPM bounds each member's clock drift: its tick interval is off by
	// up to that many parts per million.
	DriftPPM uint32
}

// WorkOptions are the simulated clients.
type WorkOptions struct {
	Clients int
	// Rate is the requests per second of all clients together.
	Rate int
	// Keys is the size of the key space.
	Keys int
	// Mix weighs the operation kinds, indexed by opKind.
	Mix [opKinds]uint32
	// SerializablePPM of reads skip the read barrier; OldRevPPM of reads
	// read at a revision the client saw before.
	SerializablePPM, OldRevPPM uint32
	// Timeout is a client's wait for one attempt; Attempts is how many it
	// makes before giving up.
	Timeout  time.Duration
	Attempts int

	// Lease is the lease clients' part, drawn from a stream of its own so
	// that it leaves the draws above alone.
	Lease LeaseWork
}

// LeaseWork are the lease clients: they grant leases with IDs of their
// own choosing (so the checkers can follow them), attach keys of their
// own key space to them, keep some alive, revoke some, let others expire
// and ask their TTL.
type LeaseWork struct {
	// Clients is the number of lease clients; 0 turns leases off.
	Clients int
	// Rate is the lease operations per second of all lease clients
	// together, keepalives of the kept leases not counted.
	Rate int
	// Keys is the size of the leased key space (keys l000, l001, ...),
	// apart from the other clients' keys.
	Keys int
	// TTLMax is the largest TTL, in seconds, a grant asks for; grants ask
	// for [0, TTLMax], the engine raises it to its minimum.
	TTLMax int64
	// Mix weighs the lease operation kinds, indexed by leaseOpKind.
	Mix [leaseOpKinds]uint32
	// KeepPPM of granted leases are kept alive, as clientv3's KeepAlive
	// does: a keepalive every TTL/3; each round stops keeping the lease
	// alive with StopPPM.
	KeepPPM, StopPPM uint32
}

// Bugs are planted bugs the checkers must catch (the simulator's
// self-test).
type Bugs struct {
	// AckBeforeFsync: the host acts on a Ready (sends, applies, answers)
	// before its fsync, which it issues later.
	AckBeforeFsync bool
	// SkipCRC: raftlog accepts WAL records without checking their CRC.
	SkipCRC bool
	// ReadWithoutReadIndex: the engine answers a linearizable read from its
	// own state without asking the leader.
	ReadWithoutReadIndex bool
	// ApplyUncommitted: the engine applies entries before they commit.
	ApplyUncommitted bool
	// SkipHardStateSync: the host does not fsync a Ready that carries only a
	// HardState (a new term or vote).
	SkipHardStateSync bool
	// KeepAliveWithoutRenew: the host answers a keepalive with the lease's
	// TTL without renewing it.
	KeepAliveWithoutRenew bool
}

// BugNames lists the planted bugs by their command-line names.
var BugNames = []string{"ack-before-fsync", "skip-crc", "read-without-readindex", "apply-uncommitted", "skip-hardstate-sync", "keepalive-without-renew"}

// SetBug turns on the planted bug with the given name.
func (b *Bugs) SetBug(name string) error {
	switch name {
	case "ack-before-fsync":
		b.AckBeforeFsync = true
	case "skip-crc":
		b.SkipCRC = true
	case "read-without-readindex":
		b.ReadWithoutReadIndex = true
	case "apply-uncommitted":
		b.ApplyUncommitted = true
	case "skip-hardstate-sync":
		b.SkipHardStateSync = true
	case "keepalive-without-renew":
		b.KeepAliveWithoutRenew = true
	default:
		return fmt.Errorf("sim: unknown bug %q (known: %s)", name, strings.Join(BugNames, ", "))
	}
	return nil
}

func (b Bugs) String() string {
	var on []string
	for i, set := range []bool{b.AckBeforeFsync, b.SkipCRC, b.ReadWithoutReadIndex, b.ApplyUncommitted, b.SkipHardStateSync, b.KeepAliveWithoutRenew} {
		if set {
			on = append(on, BugNames[i])
		}
	}
	if len(on) == 0 {
		return "none"
	}
	return strings.Join(on, ",")
}

// Draw returns the options of seed. Each group of knobs comes from its own
// stream, so a knob added to one group leaves the others' draws alone.
func Draw(seed uint64) Options {
	o := Options{Seed: seed}
	g := newRNG(seed, streamOptCluster)
	o.Members = []int{1, 3, 5}[g.pick([]uint32{2, 5, 3})]
	o.Safety = g.dur(30*time.Second, 90*time.Second).Truncate(time.Second)

	g = newRNG(seed, streamOptNet)
	o.Net.DelayMin = g.dur(0, 5*time.Millisecond).Truncate(100 * time.Microsecond)
	o.Net.DelayMean = g.dur(time.Millisecond, 50*time.Millisecond).Truncate(100 * time.Microsecond)
	o.Net.DropPPM = sometimes(g, 500_000, 0, 100_000)
	o.Net.DupPPM = sometimes(g, 500_000, 0, 100_000)
	o.Net.PartitionPPM = sometimes(g, 600_000, 0, 30_000)
	o.Net.HealPPM = uint32(g.between(10_000, 100_000))
	o.Net.AsymmetricPPM = uint32(g.between(0, ppmMax))
	o.Net.ClogPPM = sometimes(g, 500_000, 0, 20_000)
	o.Net.ClogMean = g.dur(100*time.Millisecond, 5*time.Second).Truncate(time.Millisecond)

	g = newRNG(seed, streamOptDisk)
	o.Disk.SyncMean = g.dur(100*time.Microsecond, 20*time.Millisecond).Truncate(100 * time.Microsecond)
	o.Disk.GrayPPM = sometimes(g, 500_000, 0, 10_000)
	faulty := int(g.between(0, int64((o.Members-1)/2)))
	for i := range o.Members {
		// Choose faulty members by a partial shuffle of the indexes.
		if len(o.Disk.Faulty) < faulty && g.intN(uint64(o.Members-i)) < uint64(faulty-len(o.Disk.Faulty)) {
			o.Disk.Faulty = append(o.Disk.Faulty, i)
		}
	}
	o.Disk.WriteErrPPM = sometimes(g, 500_000, 0, 2_000)
	o.Disk.ReadErrPPM = sometimes(g, 500_000, 0, 5_000)
	o.Disk.RotPPM = sometimes(g, 500_000, 0, 20_000)
	o.Disk.SegmentBytes = []int64{4 << 10, 64 << 10, 1 << 20}[g.intN(3)]
	o.Disk.EntryCacheBytes = []int64{0, 2 << 10, 64 << 10}[g.intN(3)]
	if g.chance(600_000) {
		o.Disk.SnapshotEntries = []uint64{5, 10, 30, 100, 300, 1000}[g.intN(6)]
	}

	g = newRNG(seed, streamOptFault)
	o.Faults.CrashPPM = sometimes(g, 600_000, 0, 20_000)
	o.Faults.RestartMean = g.dur(time.Second, 10*time.Second).Truncate(time.Millisecond)
	o.Faults.FastRestartPPM = uint32(g.between(0, 500_000))
	o.Faults.CrashSitePPM = sometimes(g, 500_000, 0, 100_000)
	o.Faults.PausePPM = sometimes(g, 500_000, 0, 20_000)
	o.Faults.PauseMean = g.dur(100*time.Millisecond, 5*time.Second).Truncate(time.Millisecond)
	o.Faults.DriftPPM = uint32(g.between(0, 500))

	g = newRNG(seed, streamOptWork)
	o.Work.Clients = int(g.between(1, 16))
	o.Work.Rate = int(g.between(10, 200))
	o.Work.Keys = []int{1, 3, 10, 30, 100, 1000}[g.intN(6)]
	for k := range o.Work.Mix {
		o.Work.Mix[k] = sometimes(g, 800_000, 0, 100)
	}
	o.Work.Mix[opCompact] = sometimes(g, 500_000, 0, 3)
	o.Work.SerializablePPM = sometimes(g, 500_000, 0, 500_000)
	o.Work.OldRevPPM = sometimes(g, 500_000, 0, 300_000)
	o.Work.Timeout = g.dur(500*time.Millisecond, 5*time.Second).Truncate(time.Millisecond)
	o.Work.Attempts = int(g.between(1, 4))

	g = newRNG(seed, streamOptLease)
	if g.chance(750_000) {
		l := &o.Work.Lease
		l.Clients = int(g.between(1, 4))
		l.Rate = int(g.between(2, 40))
		l.Keys = []int{1, 3, 10, 30}[g.intN(4)]
		l.TTLMax = g.between(1, 8)
		for k := range l.Mix {
			l.Mix[k] = sometimes(g, 800_000, 0, 100)
		}
		l.Mix[leaseGrant] = uint32(g.between(10, 100))
		l.KeepPPM = uint32(g.between(0, ppmMax))
		l.StopPPM = sometimes(g, 700_000, 0, 200_000)
	}
	o.Operator = drawOperator(seed, o.Members)
	return o
}

// sometimes returns 0 unless a draw with onPPM says on, then a value in
// [lo, hi]: each fault class is absent from some seeds.
func sometimes(g rng, onPPM uint32, lo, hi int64) uint32 {
	if !g.chance(onPPM) {
		return 0
	}
	return uint32(g.between(lo, hi))
}

// String prints the options, one group a line.
func (o Options) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d options:\n", o.Seed)
	fmt.Fprintf(&b, "  cluster: members=%d safety=%v liveness<=%v tick=%v election=%d heartbeat=%d bugs=%s\n",
		o.Members, o.Safety, livenessBound, tickInterval, electionTicks, heartbeatTicks, o.Bugs)
	n := o.Net
	fmt.Fprintf(&b, "  net: delay=%v+~%v drop=%dppm dup=%dppm partition=%dppm/s heal=%dppm/s asymmetric=%dppm clog=%dppm/link/s clog-mean=%v\n",
		n.DelayMin, n.DelayMean, n.DropPPM, n.DupPPM, n.PartitionPPM, n.HealPPM, n.AsymmetricPPM, n.ClogPPM, n.ClogMean)
	d := o.Disk
	fmt.Fprintf(&b, "  disk: fsync=~%v gray=%dppm faulty=%v write-eio=%dppm read-eio=%dppm rot=%dppm segment=%dB entry-cache=%dB snapshot-count=%d\n",
		d.SyncMean, d.GrayPPM, d.Faulty, d.WriteErrPPM, d.ReadErrPPM, d.RotPPM, d.SegmentBytes, d.EntryCacheBytes, d.SnapshotEntries)
	f := o.Faults
	fmt.Fprintf(&b, "  process: crash=%dppm/s restart=~%v fast-restart=%dppm crash-site=%dppm pause=%dppm/s pause-mean=%v drift<=%dppm\n",
		f.CrashPPM, f.RestartMean, f.FastRestartPPM, f.CrashSitePPM, f.PausePPM, f.PauseMean, f.DriftPPM)
	w := o.Work
	var mix []string
	for k, x := range w.Mix {
		mix = append(mix, fmt.Sprintf("%s=%d", opKind(k), x))
	}
	fmt.Fprintf(&b, "  workload: clients=%d rate=%d/s keys=%d mix=[%s] serializable=%dppm old-rev=%dppm timeout=%v attempts=%d\n",
		w.Clients, w.Rate, w.Keys, strings.Join(mix, " "), w.SerializablePPM, w.OldRevPPM, w.Timeout, w.Attempts)
	l := w.Lease
	var lmix []string
	for k, x := range l.Mix {
		lmix = append(lmix, fmt.Sprintf("%s=%d", leaseOpKind(k), x))
	}
	fmt.Fprintf(&b, "  leases: clients=%d rate=%d/s keys=%d ttl<=%ds mix=[%s] keep=%dppm stop=%dppm/round late-bound=ttl+%v",
		l.Clients, l.Rate, l.Keys, l.TTLMax, strings.Join(lmix, " "), l.KeepPPM, l.StopPPM, leaseLateBound)
	if o.Operator.ActPPM > 0 {
		fmt.Fprintf(&b, "\n%s", o.Operator)
	}
	return b.String()
}

// faulty reports whether member i has a faulty disk.
func (o *Options) faulty(i int) bool {
	for _, f := range o.Disk.Faulty {
		if f == i {
			return true
		}
	}
	return false
}
