// Package raftlog is a member's durable raft log: a write-ahead log of
// segment files and snapshot files on a diskio.FS, served to raft as a
// raft.Storage. This comment is the format specification.
//
// # Files
//
//	<dir>/wal/<seq>-<firstIndex>.wal    segments, both numbers 16 hex digits
//	<dir>/wal/<segment>.<offset>.broken bytes a recovery cut off, kept
//	<dir>/wal/LOCK                      held while the Log is open
//	<dir>/snap/<index>-<term>.snap      snapshots, both numbers 16 hex digits
//	<dir>/snap/<snapshot>.broken        a snapshot recovery found damaged
//
// Sorted names are in sequence (and index) order. Files ending in .tmp are
// never part of the log: recovery removes them.
//
// # Records
//
// A segment is a sequence of records, each starting at an offset that is a
// multiple of 8. All integers are little-endian.
//
//	 0       4       8   9      12      16                      16+len  footprint
//	+-------+-------+---+------+-------+--------------------------+-------+
//	|  crc  |  len  |typ| zero |synced | payload (len bytes)      | zeros |
//	+-------+-------+---+------+-------+--------------------------+-------+
//	                                      padding to a multiple of 8 ^
//
//	crc     CRC-32C (Castagnoli) of seq (8 bytes), offset (8 bytes), then
//	        the record from byte 4 through its padding. Seeding it with the
//	        segment's sequence number and the record's offset makes a record
//	        valid only where it was written: a misdirected write, a page of
//	        another segment or a copy left over elsewhere fails it.
//	len     payload length, at most 128 MiB.
//	typ     record type, below; 0 is not a type.
//	synced  how many bytes of this segment a completed fsync had made
//	        durable when this record was written. Every later record
//	        vouches for the bytes before it (see Recovery).
//
// A header of 16 zero bytes is space never written: segments are
// preallocated (zeros), and the reader stops there.
//
//	type          payload
//	1 segment     "basaltwl", version u32 (1), zero u32, seq u64,
//	              firstIndex u64, prevTerm u64, hard state (term, vote,
//	              commit u64); the first record of a segment, and only there
//	2 snapshot    same payload: the snapshot marker, first record of a
//	              segment started by ApplySnapshot
//	3 hardstate   term u64, vote u64, commit u64
//	4 entry       index u64, term u64, type u8, data
//	5 seal        empty; the last record of a segment that has a successor
//	6 sync        empty; a sync marker, written after an fsync
//
// # Segments and the log they hold
//
// Replaying the retained segments in order gives the log:
//   - a segment record truncates the log to firstIndex-1, whose term it
//     carries (prevTerm), and sets the hard state; in the oldest retained
//     segment it starts the log there;
//   - a snapshot record discards the log: it restarts after the snapshot
//     at firstIndex-1, of term prevTerm;
//   - an entry at an index the log holds replaces it and every entry after
//     it (raft overwriting its uncommitted suffix); at most one past the
//     last index is appended;
//   - a hardstate record replaces the hard state.
//
// Every entry of a segment is at or above its firstIndex: an overwrite
// below it starts a new segment named after the overwrite. So the live
// entries of a segment are below the smallest firstIndex of the segments
// after it, and none are live after a later snapshot record; that is what
// makes a segment releasable. Because the segment header carries the hard
// state and the term before firstIndex, older segments can go without
// losing either.
//
// Truncating raft's suffix is append-only: the new entries go after the
// old, so a crash either keeps the replacement or leaves the old suffix,
// both states raft allows before the Save returned.
//
// # Writes and fsyncs
//
// Save (one raft Ready) encodes the hard state (if changed) first and then
// the entries, writes them with one WriteAt at the segment's end and
// fsyncs once if asked (group commit). The hard state goes first so that a
// torn batch never keeps entries of a term the durable hard state has not
// reached; recovery lowers a commit index past the recovered entries.
//
// A batch never spans segments. When it does not fit, the segment is
// sealed: a seal record is written and the segment fsynced. The successor
// is written under <name>.tmp: preallocated, its header written and
// fsynced, then renamed into place and the directory fsynced. A segment
// under its final name is therefore durable from its header on, and every
// segment before the newest was synced whole before its successor existed.
// Removing segments or snapshots is followed by a directory fsync.
//
// An fsync error is fatal: it is never retried (the kernel may already
// have dropped the pages it failed to write), the Log refuses every later
// call, and the member must stop. Every other error is fatal too.
//
// # Recovery
//
// Recovery reads every retained segment, checks every record, and replays
// the valid ones. Where the records of a segment stop before its seal,
// recoveryCases (recovery.go) decides, from four facts:
//   - is the segment the newest one;
//   - is the header there all zeros, or a damaged record;
//   - is the offset vouched for: below the synced offset that some valid
//     record of the segment, before or after the damage, claims;
//   - is any byte at or after the offset not zero.
//
// The reasoning: a crash can only damage bytes written after the last fsync
// that returned, and bytes are never written after a later record claims
// them synced. So damage at a vouched offset is damage to synced data
// (rot, a lost or misdirected write): recovery stops with an error wrapping
// ErrCorrupt that names the file and offset, and truncates nothing. A
// valid record after damaged bytes is not by itself proof of corruption:
// the pages of an unsynced write can reach the disk out of order. Only its
// claim counts. Damage at an offset nothing vouches for, in the newest
// segment, is a torn write: the bytes from it on are copied to a .broken
// file (made durable), then cut off, the segment re-preallocated and the
// cut made durable, so that the torn bytes can never reappear behind new
// records. Any damage in a segment with a successor stops recovery: it was
// synced whole. The rows that contradict themselves (a damaged record with
// no nonzero byte) panic.
//
// One case cannot be told apart: the newest synced batch rotting before
// anything was written after it. Nothing vouches for it, so it is handled
// as a torn tail: logged, copied aside, cut. Open and Close shrink that
// window by writing a sync marker after an fsync, so a cleanly closed or a
// recovered log has every byte vouched for.
//
// After recovery Open fsyncs the newest segment (bytes that survived a
// crash may sit in the page cache only) and writes a sync marker; if the
// newest segment is sealed it starts a new one. Temp files are removed, and
// segments before a gap in the sequence numbers (left by an interrupted
// release) are removed once recovery has succeeded without them.
//
// # Snapshots
//
//	 0          8       12      16                  16+m   4      align 8
//	+----------+-------+-------+-------------------+------+------+
//	|"basaltsn"|version| m     | SnapshotMetadata  | crc  | zeros|
//	+----------+-------+-------+-------------------+------+------+
//	| body (the engine's state, streamed)                          |
//	+--------------+----------+------------+-------------+
//	| body len u64 | body crc | trailer crc| "basaltse"  |   (24 bytes)
//	+--------------+----------+------------+-------------+
//
// The header CRC covers the bytes before it; the trailer CRC covers the
// body length and body CRC; all are CRC-32C. A SnapshotWriter writes to
// <name>.tmp; Commit writes the trailer, fsyncs, renames, and fsyncs the
// directory. SnapshotSaved makes a committed snapshot the base: raft sees
// FirstIndex = index+1 and Snapshot() returns its metadata with a
// Descriptor as Data (the body is read with OpenSnapshot, checked as it
// streams). ApplySnapshot makes a snapshot from the leader the base by
// starting a segment whose first record is the snapshot marker.
//
// On restart the base is the newest snapshot that is intact (the whole body
// is read and checked) and usable: the replayed log holds its index with its
// term, or starts right after it. Log Matching makes that the same prefix, so
// a snapshot committed before a crash cut SnapshotSaved short is used,
// while one received but never applied is not. The log served is the WAL
// after it. A damaged newest snapshot is renamed .broken and recovery falls
// back to the one before; for that the WAL is kept back to the previous
// base: releasing after a new base removes the oldest segments whose live
// entries are all at or below the previous base, and the snapshot files
// beyond Options.SnapshotsRetained (never the base or the previous one).
//
// # Memory
//
// The Log keeps, for every entry after the base, its term and location
// (24 bytes), and a suffix of decoded entries bounded by
// Options.EntryCacheBytes. Older entries are read back from the segments
// in chunks, their records checked again.
//
// # Crash points
//
// The Failpoint constants name pingcap/failpoint crash points: before and
// after every WAL fsync, before and after the snapshot rename, and before a
// release. Tests enable them with count terms.
package raftlog
