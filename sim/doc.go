// Package sim is basalt's deterministic simulator: a whole cluster (1, 3
// or 5 members at the start, each the production engine.Node on raftlog
// over a diskio.Sim disk) and its clients, run on one goroutine from one
// event heap, reproducible bit for bit from a seed.
//
// # Time and events
//
// Simulated time is a time.Duration from 0. Every action is an event in a
// heap ordered by (time, seq), seq being the order of scheduling, so ties
// break the same way in every run. The events are member ticks (100 ms,
// each member with its own phase and drift), message deliveries, I/O
// completions, client sends, answers and timeouts, the once-a-second fault
// roll (the nemesis), restarts, unpauses and the liveness polls. The trace
// is a hash over every event and what it did; `basalt sim --seed N` prints
// it, and two runs of a seed must print the same one.
//
// # Randomness
//
// Every random choice comes from a stream seeded by splitmix64(seed ^ id)
// (rand.go): one per group of options, one for the network, the faults,
// the workload, and one per member for its disk, its crashes and its
// engine's request IDs; adding draws to one leaves the others alone.
// Probabilities are integers in parts per million. raft draws its election
// jitter from crypto/rand.Reader, which has no hook in raft.Config: the run
// points it at a ChaCha8 stream of the seed (crypto.go, the one file
// exempt from the core rules), and tests do the same with
// testing/cryptotest.SetGlobalRandom(t, RaftCryptoSeed(seed)). So only one
// simulation may run in a process at a time.
//
// # The host
//
// member.go hosts a Node as server/loop.go does: it persists each Ready
// with raftlog.Log.Save (fsync when MustSync), waits the fsync's simulated
// latency, then sends the messages, calls Advance, publishes the view and
// answers its clients (linearizable reads after their read barrier,
// serializable ones from the newest view). The host bugs of the self-test
// live here (AckBeforeFsync, SkipHardStateSync); the others are
// raftlog.Options.SkipCRC and engine.Config.Bugs.
//
// # Faults (swarm testing)
//
// Draw gives each seed its own cluster size, fault probabilities and
// workload, printed before the run: message delay (so reorder), drop,
// duplicate (not of forwarded proposals), partitions (one member or a
// random split, symmetric or one-way), clogged links; crashes (the disk's
// crash model keeps, tears or drops unsynced pages), fast and slow
// restarts, a crash right after a member acted on a new term or vote;
// pauses; clock drift; slow fsyncs with a gray tail; and on a minority of
// "faulty" disks, EIO on writes, fsyncs and reads and bit rot on WAL reads.
// Rot is injected only into running members, whose read-back checks each
// record: recovery cannot tell the rot of the newest synced batch from a
// torn write (raftlog's doc), and a member that finds rot stops for good.
//
// # Leases
//
// Most seeds also run lease clients (lease.go), drawn from streams of
// their own: they grant leases with IDs of their own choosing and TTLs of
// a few seconds, attach keys of a key space of their own (puts and
// Kubernetes-style compare-and-sets), keep some leases alive with a
// keepalive every TTL/3 as clientv3 does and let the others expire,
// revoke some and ask their TTL. A keepalive or TTL waits for a read
// barrier and is answered from the leader's memory, as the server does;
// any other member answers not-leader and the client tries another.
//
// # Checkers
//
// After every Advance (check.go): at most one leader per term; the member's
// committed entries equal the committed-log oracle (set by whichever
// member commits an index first); its revision at its applied index is the
// one the log gives; sampled state hashes agree at equal applied indexes.
// On every restart: the reopened log holds the term, vote and entries the
// member had acted on. After the run: every acknowledged write is in the
// committed log and every answer is the one a replay of the log through
// the reference model (model.go, etcd's KV semantics written apart from
// engine/mvcc) gives; linearizable answers never show a revision older
// than one given before they were asked; porcupine finds each key's
// history linearizable; the converged members hold the model's state.
// The lease checker (leasecheck.go) checks the answers the log does not
// give (keepalives, TTLs) against the lease lives the log gives, that no
// lease is revoked by expiry or found expired before TTL (less a tick and
// drift) after the sending of a grant or keepalive that was acknowledged,
// and that, in any window no fault disturbed, every lease is revoked
// within TTL plus an election timeout and a revoke retry (plus a tick,
// drift and the time to commit) of its last renewal.
//
// # Membership changes
//
// In most seeds of 3 or 5 members an operator (membership.go, on a stream
// of its own) changes the membership during the safety phase, one change
// at a time, through the engine entry points the server's cluster service
// uses: it adds a learner (a new member, fresh disk, started once its
// addition commits, catching up from the log or a snapshot), promotes it
// (the leader's LearnerReady may refuse; a follower forwards to it),
// removes a learner or a voter (down to 3 voters, a majority of them on
// disks that do not fail), updates peer URLs, and now and then makes a
// change etcd refuses at apply. At most 5 voters and 1 learner. A learner
// refuses all but serializable reads; a removed member stops once it
// applies its removal or a peer's transport refuses it. A members model
// replays the committed conf changes with etcd's rules: every member's
// table must equal it at every applied index, and every membership answer
// must be the one the committed log gives (a leader's refused promotion
// too). The liveness core is drawn from the final voters, and takes every
// member a change still in doubt may need.
//
// Watchers (watch.go, on their own random stream) live on each member's
// engine/watch hub, which the member feeds with every new view. They start
// now, in the past (compacted or not) or in the future, with filters,
// prev_kv and progress notifications; some read rarely and fall behind. A
// crash kills a member's watchers; the client re-creates each on another
// member from the revision after the last it saw, as clientv3 does. Every
// response is checked against the committed history as it is taken: events
// are exactly those asked for from the watcher's next revision through the
// response's last one (so ordered, unique, gap-free, whole revisions), with
// prev_kv right or missing only where compacted; a progress notification
// vouches that nothing at or below it is still due; a compaction cancel
// comes only when the stream's next revision is really gone, and a start
// below the compaction revision gets one first. After the run every watcher
// on the converged core is drained and must reach its member's revision.
//
// # Liveness
//
// After the safety phase a random majority of intact voters becomes the
// core (liveness.go): restarted, unpaused, fully connected, with fast
// faultless disks and network; the others stay down. Within 10 simulated
// seconds it must elect a leader, commit a probe write, answer every
// client and converge to equal state; with lease clients, no one keeps a
// lease alive any more, and within the longest TTL plus an election
// timeout and a revoke retry more every lease must be revoked.
package sim
