package engine

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

	// raftMsgBytesMax and raftInflightMsgsMax are raft's flow control, the
	// values etcd uses.
	raftMsgBytesMax     = 1 << 20
	raftInflightMsgsMax = 512
	// raftUncommittedBytesMax bounds the proposals a leader accepts ahead of
	// commit.
	raftUncommittedBytesMax = 1 << 30
)
