// Package engine is basalt's deterministic core: a raft.RawNode, the apply
// of committed entries to the MVCC store, and everything else a member
// decides (pending requests, linearizable read barriers, snapshots, and
// lease expiry, counted in ticks: lease.go).
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
//			if rd.Snapshot != nil: log.ApplySnapshot(rd.Snapshot.Metadata)
//			persist rd.HardState and rd.Entries (fsync if rd.MustSync)
//			send rd.Messages
//			out := n.Advance(rd)
//			if out.Err != nil: stop the member
//			publish out.View, answer out.Responses
//			if out.Snapshot != nil: start writing it (below)
//		}
//	}
//
// # Snapshots
//
// Every Config.SnapshotEntries applied entries Advance hands out a
// SnapshotJob: the state at the applied index as an immutable view. The
// host writes it off the loop, so writes keep flowing meanwhile:
//
//	w, err := log.CreateSnapshot(job.Meta)       // the loop
//	err = engine.WriteSnapshot(w, job); w.Commit()  // any goroutine
//	if n.SnapshotDone(job, err) {                // the loop again
//		log.SnapshotSaved(job.Meta)              // the log's new base; raft's FirstIndex follows
//	}
//
// A restart restores the log's base snapshot and replays the log after it.
// A snapshot the leader sends travels as a raftlog Descriptor in the
// MsgSnap; the transport moves the body into the receiver's log
// (raftlog.Log.ReceiveSnapshot, or raftlog.CopySnapshot between two logs
// in one process) before it steps the message, and reports the outcome to
// the leader with ReportSnapshot.
//
// A response leaves Advance only for an entry that is committed, locally
// durable (the host persisted it before calling Advance) and applied
// (etcd #14370 answered a single member's write before its fsync).
package engine
