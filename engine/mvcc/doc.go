// Package mvcc is basalt's multi-version key-value store: the deterministic, single-writer core
// that the engine's apply loop drives, and the immutable read views that request goroutines read
// through. It follows etcd v3.7.3's semantics (server/storage/mvcc and etcdserver/txn) and touches
// neither the OS nor the clock.
//
// # Revisions
//
// A new store is at revision 1 with compaction revision 0. A write Txn gives all its changes one
// main revision, Rev()+1, with Sub numbering them; End bumps the store's revision by exactly one
// iff the txn changed something (a DeleteRange that deletes nothing is no change). A key's version
// is 1 on creation and +1 per put; a delete writes a tombstone, and putting the key again starts a
// new generation at version 1 with a new create revision. Compact(r) makes reads below r fail
// with ErrCompacted at once; CompactStep reclaims the memory incrementally.
//
// # Structure
//
//	live  B-tree  key -> *keyIndex      keys whose newest version is a put
//	dead  B-tree  key -> *keyIndex      keys whose newest version is a tombstone, still retained
//	hist  B-tree  main rev -> keys      the keys each revision changed, in Sub order
//
// live and dead together are the key index: each key maps to all its versions since compaction,
// tombstones included, and each version holds its value. Splitting the index by liveness lets an
// overwrite touch one tree, and makes live a counted B-tree of exactly the keys that exist at the
// current revision: the count of a range there is a difference of two ranks, found by binary
// search over GetAt in O(log² n) without walking the range (etcd #11057). hist drives compaction
// and watch catch-up (View.Events). The trees are tidwall/btree Maps, which have no locks.
//
// The versions of one key, through writes and compactions (mod.sub, then ver/create):
//
//	put a    @2   [2.0 v1/c2]                                  live
//	put a    @3   [2.0 v1/c2, 3.0 v2/c2]                       live
//	del a    @4   [2.0 v1/c2, 3.0 v2/c2, 4.0 tomb]             dead
//	put a    @5   [2.0 v1/c2, 3.0 v2/c2, 4.0 tomb, 5.0 v1/c5]  live
//	compact 3     [3.0 v2/c2, 4.0 tomb, 5.0 v1/c5]   the newest version <= 3 is a put: kept
//	compact 4     [5.0 v1/c5]                        the newest version <= 4 is a tombstone: dropped
//
// # Views and immutability
//
// View copies the three trees with tidwall's copy-on-write Copy, which is O(1): from then on the
// writer copies a node before changing it, and never changes a node a View shares. The items are
// protected by three rules, which together mean nothing a published View reads is ever written:
//
//   - A keyIndex is modified in place only if it was made after the last View (its epoch equals
//     Store.epoch); otherwise the writer makes a new keyIndex and sets it in the tree. The one
//     exception is a put on a live key: it appends the version to the shared keyIndex, storing
//     the longer slice atomically, and a View reads no version above its revision. This spares
//     the copy of the keyIndex and of the B-tree path to it, which took most of what a put
//     allocated when a View was taken after every applied batch.
//   - The versions array of a key is only ever appended to beyond every slice derived from it, or
//     replaced by a new array; a version, a revChanges and the bytes of keys and values are never
//     written once stored.
//
// Reads hand out KeyValues whose Key and Value alias those immutable bytes: callers own the
// KeyValue objects but must never write into the byte slices.
//
// # Compaction
//
// Compaction at r keeps, for each key, every version above r and the newest version <= r unless
// it is a tombstone. CompactStep works through hist from its oldest revision, compacting each key
// a revision changed, within a budget, and resumes where it stopped; reads, HashKV and WriteTo
// select the logically retained versions themselves, so physical progress never shows. As etcd
// v3.7.3, it physically keeps every change made at r itself (tombstones too) and hist's entry for
// r until the next compaction, so that a watch starting at r sees r's deletes (etcd #18089).
//
// # Snapshots and hashes
//
// View.WriteTo writes the logical state in a framed, checksummed, versioned stream (format in
// snapshot.go); Restore reads it back. View.HashKV hashes the same per-key records.
package mvcc
