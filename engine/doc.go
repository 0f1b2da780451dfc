// Package engine is basalt's deterministic core: a raft.RawNode, the apply
// of committed entries to the MVCC store, and everything else a member
// decides (pending requests, linearizable read barriers, snapshots).
//
// The same code runs in the production server and in the simulator, so it
// must not perform I/O of any kind: no files, no network, no clocks, no
// goroutines, no global randomness, no map iteration that reaches output.
// Time is a count of Tick calls. Everything from the outside world arrives
// through Config (the raft log, a seeded random source, a logger, limits)
// or through the methods of Node.
//
// The host drives a Node like raft's RawNode:
//
//	for {
//		// on a timer: n.Tick(); on a peer message: n.Step(m); on a request: n.Submit(r)
//		for n.HasReady() {
//			rd := n.Ready()
//			persist rd.HardState and rd.Entries (fsync if rd.MustSync)
//			send rd.Messages
//			out := n.Advance(rd)
//			publish out.View, answer out.Responses
//		}
//	}
//
// A response leaves Advance only for an entry that is committed, locally
// durable (the host persisted it before calling Advance) and applied
// (etcd #14370 answered a single member's write before its fsync).
package engine
