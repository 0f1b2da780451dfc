// Package watch is the watch hub: it feeds the watchers of one member from the read views the
// member publishes, with no goroutines, clocks or I/O of its own, so the server and the
// simulator run the same code.
//
// The host drives it with calls: Publish hands it each new view (the synced watchers get the
// events of the new revisions at once, one response per revision); Sync brings unsynced
// watchers forward from the history in bounded batches; Create, Cancel and Progress answer a
// stream's requests; ProgressTick sends the periodic progress notifications when the host's
// timer says so. Responses wait in the stream's queue in the order they must be sent; the
// host takes them (Take), sends them and reports each one Sent, which frees its place in the
// watcher's bounded queue. A watcher whose queue is full falls behind into the unsynced set
// and never blocks Publish, loses or duplicates an event.
//
// A Hub is not safe for concurrent use: a host with several goroutines calls it under one
// mutex.
package watch
