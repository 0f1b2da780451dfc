package raftlog

// Every size the package holds or writes is bounded here.
const (
	// segmentBytesDefault is the preallocated size of a WAL segment.
	segmentBytesDefault = 64 << 20
	// segmentBytesMin keeps a segment big enough for its header, one small
	// batch and its seal; tests use it to force rotations.
	segmentBytesMin = 1 << 10
	// segmentBytesMax bounds Options.SegmentBytes.
	segmentBytesMax = 1 << 30
	// batchBytesMax bounds the records of one Save (one raft Ready). A batch
	// never spans two segments, so a segment file holds at most a header, one
	// batch larger than SegmentBytes and a seal.
	batchBytesMax = 1 << 30
	// segmentFileBytesMax is the largest offset a record header can name
	// (its synced field is a uint32).
	segmentFileBytesMax = 1<<32 - 1
	// payloadBytesMax bounds one record's payload, so a damaged length
	// field cannot make recovery read gigabytes.
	payloadBytesMax = 128 << 20
	// entryCacheBytesDefault bounds the decoded entries kept in memory.
	// Followers in step get entries before they leave the cache, and one
	// that lags more is sent entries read back from the segments; a larger
	// cache only costs the garbage collector, which scans every cached
	// entry on each cycle (64 MiB of entries took about a tenth of a
	// member's heap under put/200).
	entryCacheBytesDefault = 8 << 20
	// readChunkBytesMax bounds one ReadAt of recovery or of Entries (a
	// single record larger than this is still read whole).
	readChunkBytesMax = 4 << 20
	// wbufRetainBytesMax: a write buffer grown past this by a big batch is
	// dropped after the batch instead of being kept for the next one.
	wbufRetainBytesMax = 4 << 20
	// snapshotBufferBytes is the write buffer of a SnapshotWriter and the
	// read buffer of a snapshot body reader.
	snapshotBufferBytes = 1 << 20
	// snapshotMetaBytesMax bounds the encoded SnapshotMetadata in a
	// snapshot file header (a ConfState of a few thousand voters fits).
	snapshotMetaBytesMax = 1 << 20
	// snapshotsRetainedDefault follows etcd's --max-snapshots.
	snapshotsRetainedDefault = 5
	// segmentsListedMax bounds the files recovery will consider in wal/
	// (about 64 TiB of default segments).
	segmentsListedMax = 1 << 20
)

// Compile-time checks of how the limits relate (a negative constant
// converted to uint does not compile).
const (
	_ = uint(segmentFileBytesMax - (segmentBytesMax + batchBytesMax + 2*recordHeaderBytes + segmentHeaderPayloadBytes))
	_ = uint(segmentBytesMax - segmentBytesDefault)
	_ = uint(segmentBytesDefault - segmentBytesMin)
	_ = uint(segmentBytesMin - (2*recordHeaderBytes + segmentHeaderPayloadBytes + hardStatePayloadBytes + entryPayloadFixedBytes))
	_ = uint(batchBytesMax - payloadBytesMax - recordHeaderBytes)
	_ = uint(payloadBytesMax - snapshotMetaBytesMax)
)
