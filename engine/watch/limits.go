package watch

// Limits. Every bound the hub relies on is here, with the unit last in the name.
const (
	// QueuedResponsesMax is how many event responses of one watcher may wait in its stream's
	// queue (taken and not yet reported Sent count too). A synced watcher that would exceed it
	// falls behind into the unsynced set and later catches up from the history, so a slow
	// stream never holds more than this per watcher and never slows the publisher or the other
	// streams.
	QueuedResponsesMax = 128
	// batchRevsMax is how many distinct revisions one catch-up response may carry (etcd's
	// watchBatchMaxRevs).
	batchRevsMax = 1000
	// readEventsMax bounds the events one history read returns.
	readEventsMax = 4096
	// scanEventsMax bounds the history events one catch-up pass scans for one watcher, so a
	// watcher that matches little in a long history cannot hold the hub for long.
	scanEventsMax = 1 << 16
)
