package mvcc

import "unsafe"

// Limits. Every bound the package relies on is here, with the unit last in the name.
const (
	// treeDegree is the degree of every B-tree: a node holds at most 2*treeDegree-1 items.
	// A copy-on-write node copy after a View costs O(treeDegree).
	treeDegree = 32

	// compactCopyVersionsMax: when compaction drops the oldest versions of a key it copies the
	// survivors into a fresh array (so the dropped values can be freed) if there are at most
	// this many of them; otherwise it re-slices in O(1), and the dropped prefix is freed when the
	// key's array next grows or a later compaction leaves few enough survivors.
	compactCopyVersionsMax = 1024

	// valueSegmentBytesMax is the size a key's value segments grow to (keyData.store): large
	// enough that a key written many times has few objects for the collector to mark, small
	// enough that growing a segment never copies much.
	valueSegmentBytesMax = 64 << 10

	// histChunkEntries is how many revisions one chunk of the history holds.
	histChunkEntries = 256

	// snapshotFrameBytesMax is the largest payload of one frame of a WriteTo stream.
	snapshotFrameBytesMax = 64 << 10

	// snapshotKeyBytesMax and snapshotValueBytesMax bound what Restore allocates for one key or
	// value. They are far above what the server accepts (--max-request-bytes), so they only
	// reject nonsense that a valid checksum did not catch.
	snapshotKeyBytesMax   = 64 << 20
	snapshotValueBytesMax = 1 << 30

	// restorePreallocVersionsMax caps how many versions Restore reserves for a key up front, so a
	// version count is trusted only as far as the stream really holds versions.
	restorePreallocVersionsMax = 1024

	// keyOverheadBytes and versionOverheadBytes are what Bytes charges for each retained key and
	// each retained version on top of the key and value bytes themselves.
	keyOverheadBytes     = int64(unsafe.Sizeof(keyIndex{})) + int64(unsafe.Sizeof(keyData{})) + int64(unsafe.Sizeof(""))
	versionOverheadBytes = int64(unsafe.Sizeof(version{}))
)

// A frame's length is written as a uint32 (compile error if it does not fit).
const _ = uint32(snapshotFrameBytesMax)
