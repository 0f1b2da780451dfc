package sim

import "time"

// Limits and fixed settings of the simulator, kept together so that their
// relations are visible.
const (
	// ppmMax is one million parts per million: certainty.
	ppmMax = 1_000_000

	// tickInterval is a member's nominal tick, etcd's default heartbeat
	// interval; electionTicks and heartbeatTicks are etcd's defaults in
	// ticks (1 s and 100 ms).
	tickInterval   = 100 * time.Millisecond
	electionTicks  = 10
	heartbeatTicks = 1
	// requestTimeoutTicks is how long a member keeps a request before it
	// answers ErrTimeout (etcd: 5 s plus two election timeouts).
	requestTimeoutTicks = 70
	// requestBytesMax is etcd's --max-request-bytes default.
	requestBytesMax = 1536 * 1024

	// nemesisInterval is how often fault probabilities (given per second)
	// are rolled.
	nemesisInterval = time.Second
	// clientLinkDelayMin and clientLinkDelayMax bound the one-way delay
	// between a client and a member.
	clientLinkDelayMin = 100 * time.Microsecond
	clientLinkDelayMax = 2 * time.Millisecond
	// retryBackoff is how long a client waits before retrying a request
	// that failed without an answer from the cluster.
	retryBackoff = 100 * time.Millisecond
	// hashInterval is how often, at most, a member's state hash is sampled
	// for comparison with the other members at the same applied index.
	hashInterval = 250 * time.Millisecond

	// livenessBound is how long the healed core has to converge.
	livenessBound = 10 * time.Second
	// livenessPoll is how often convergence is checked.
	livenessPoll = 100 * time.Millisecond

	// votersMax and learnersMax bound the membership the operator makes
	// (learnersMax is etcd's --max-learners default); votersMin is the
	// fewest voters it removes down to. membersAddedMax bounds the members
	// it adds in a run.
	votersMax       = 5
	votersMin       = 3
	learnersMax     = 1
	membersAddedMax = 8
	// removingMax bounds the doubtful removals the operator weighs before
	// it removes another voter (it weighs every combination of them).
	removingMax = 4
	// operatorCallTimeout is how long the operator waits for an answer;
	// a proposed change it does not see committed operatorStaleAfter later
	// was most likely lost.
	operatorCallTimeout = 10 * time.Second
	operatorStaleAfter  = 20 * time.Second

	// rangeKeysMax bounds the keys a range read or delete spans.
	rangeKeysMax = 8

	// leaseKeptMax bounds the leases one lease client keeps alive at once.
	leaseKeptMax = 8
	// leaseRecentMax is how many of its newest leases a lease client picks
	// from for an attach, keepalive, revoke or TTL.
	leaseRecentMax = 4
	// leaseRegrantPPM of grants ask for an ID the client granted before;
	// leaseUnknownPPM of lease picks name a lease never granted;
	// leaseDetachPPM of attaches put the key with no lease.
	leaseRegrantPPM = 50_000
	leaseUnknownPPM = 30_000
	leaseDetachPPM  = 100_000
	// leaseRevokeRetry is how long the leader waits before it proposes the
	// revoke of an expired lease again (the engine's
	// leaseExpiredRetryInterval).
	leaseRevokeRetry = 3 * time.Second
	// leaseLateBound is how much later than its TTL after its last renewal
	// a lease may be revoked in a quiet window (leasecheck.go): a new
	// leader's extension (an election timeout) and one revoke retry; a
	// tick, drift and the time to commit are added per seed.
	leaseLateBound = electionTicks*tickInterval + leaseRevokeRetry
	// disturbSettle is how long a fault disturbs the cluster after it
	// ends: two election timeouts, the longest randomized one.
	disturbSettle = 2 * electionTicks * tickInterval

	// opsMax bounds the client operations of one run, so a runaway workload
	// cannot exhaust memory.
	opsMax = 200_000
	// eventsMax bounds the events of one run; reaching it is reported as a
	// stall of the simulator itself.
	eventsMax = 50_000_000
)
