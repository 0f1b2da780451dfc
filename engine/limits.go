package engine

import "time"

// Limits of the engine, kept together so their relations are visible.
const (
	// requestsPendingMax bounds the requests (writes and read barriers) a
	// member holds between Submit and their answer; Submit refuses more.
	requestsPendingMax = 1 << 16

	// readIndexRetryTicks is how long a ReadIndex request may go unanswered
	// before it is asked again: raft drops it silently when leadership moves.
	readIndexRetryTicks = 5

	// compactVersionsPerAdvance bounds the physical compaction work done in
	// one Advance, so that a large compaction never stalls the apply loop.
	compactVersionsPerAdvance = 10000
	// compactionsHeldMax bounds the compactions (each pinning the view it
	// compacted) held for the next Output, when a restart replays many;
	// hosts keep only etcd's newest 10 hashes anyway.
	compactionsHeldMax = 10

	// raftMsgBytesMax and raftInflightMsgsMax are raft's flow control, the
	// values etcd uses.
	raftMsgBytesMax     = 1 << 20
	raftInflightMsgsMax = 512
	// raftUncommittedBytesMax bounds the proposals a leader accepts ahead of
	// commit.
	raftUncommittedBytesMax = 1 << 30

	// snapshotEntriesDefault is Config.SnapshotEntries when it is 0, etcd's
	// --snapshot-count default.
	snapshotEntriesDefault = 10000
	// confStateBytesMax bounds the conf state section of a snapshot body,
	// as raftlog bounds the metadata that also carries it.
	confStateBytesMax = 1 << 20
	// snapshotReadBufferBytes is the read buffer of a snapshot body being
	// restored: the body's reader may cost a system call per Read.
	snapshotReadBufferBytes = 256 << 10

	// alarmsMax bounds the alarms a snapshot may carry: a few types for
	// each member.
	alarmsMax = 1 << 12

	// learnersMax is how many learners the cluster may hold, etcd's
	// --max-learners default; it decides conf changes at apply, so every
	// member must use the same value.
	learnersMax = 1
	// learnerReadyPercent is how much of the leader's log a learner must
	// hold to be promoted, etcd's readyPercentThreshold.
	learnerReadyPercent = 0.9
	// membersMax bounds the members (and the removed IDs) a snapshot may
	// carry, and memberBytesMax one encoded member in it.
	membersMax     = 1 << 16
	memberBytesMax = 1 << 16
	// tickDurationDefault is Config.TickDuration when it is 0, etcd's
	// default heartbeat interval.
	tickDurationDefault = 100 * time.Millisecond
	// leaseRevokesPerSecond bounds the revokes of expired leases the
	// leader proposes (etcd's leaseRevokeRate); the rest wait their turn.
	leaseRevokesPerSecond = 1000
	// leaseCheckpointsPerSecond and leaseCheckpointBatchMax bound the
	// checkpoints the leader proposes, and how many share an entry.
	leaseCheckpointsPerSecond = 1000
	leaseCheckpointBatchMax   = 1000
	// leaseCheckpointInterval is how often the leader replicates a lease's
	// remaining TTL (etcd's default); shorter leases are never checkpointed.
	leaseCheckpointInterval = 5 * time.Minute
	// leaseExpiredRetryInterval is how long an expired lease whose revoke
	// has not applied waits before it is proposed again.
	leaseExpiredRetryInterval = 3 * time.Second
	// leaseWalkPerTickMax bounds the leases the leader looks at in one
	// tick while walking the untouched ones.
	leaseWalkPerTickMax = 10000
	// leasesMax bounds the leases a snapshot may carry.
	leasesMax = 1 << 32
	// authRecordsMax bounds the users, and the roles, a snapshot may carry,
	// and authRecordBytesMax one encoded user or role in it.
	authRecordsMax     = 1 << 20
	authRecordBytesMax = 64 << 20
)
