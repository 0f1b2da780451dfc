package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"

	"github.com/basaltdb/basalt/diskio"
)

var (
	// ErrCorrupt is wrapped by every error about damaged durable state; the
	// message names the file and the offset.
	ErrCorrupt = errors.New("raftlog: corrupt")
	// ErrFailpoint is returned when an enabled crash point fires.
	ErrFailpoint = errors.New("raftlog: failpoint")
	// ErrTooLarge is returned when a record or a batch exceeds its limit.
	ErrTooLarge = errors.New("raftlog: too large")
	// ErrNoSnapshot is returned by OpenSnapshot when the log has no base
	// snapshot.
	ErrNoSnapshot = errors.New("raftlog: no snapshot")
	// ErrSnapshotInvalid is returned when a snapshot given to the Log does not
	// fit it (older than its base, past its last index, term mismatch, or its
	// file is missing).
	ErrSnapshotInvalid = errors.New("raftlog: snapshot does not fit the log")
	// ErrSnapshotFinished is returned by a SnapshotWriter used after Commit
	// or Abort.
	ErrSnapshotFinished = errors.New("raftlog: snapshot writer already finished")
	// ErrClosed is returned by a Log used after Close.
	ErrClosed = errors.New("raftlog: closed")
)

// Options configure a Log. The zero value is valid.
type Options struct {
	// SegmentBytes is the preallocated size of a WAL segment; 0 means 64 MiB.
	SegmentBytes int64
	// SnapshotsRetained is how many snapshot files are kept; 0 means 5
	// (etcd's --max-snapshots). The WAL is kept back to the previous base
	// snapshot, so that a damaged newest snapshot can fall back to it.
	SnapshotsRetained int
	// EntryCacheBytes bounds the decoded entries kept in memory; older
	// entries are read back from the segments. 0 means 8 MiB.
	EntryCacheBytes int64
	// Logger receives recovery decisions; nil means zap.NewNop().
	Logger *zap.Logger
	// SkipCRC plants a bug for the simulator's self-test: WAL records are
	// accepted without checking their CRC, on recovery and on read-back, so
	// torn writes and bit rot go unnoticed. Production leaves it off.
	SkipCRC bool
}

func (o Options) normalized() (Options, error) {
	if o.SegmentBytes == 0 {
		o.SegmentBytes = segmentBytesDefault
	}
	if o.SegmentBytes < segmentBytesMin || o.SegmentBytes > segmentBytesMax {
		return o, fmt.Errorf("raftlog: SegmentBytes %d outside [%d, %d]", o.SegmentBytes, segmentBytesMin, segmentBytesMax)
	}
	if o.SnapshotsRetained == 0 {
		o.SnapshotsRetained = snapshotsRetainedDefault
	}
	if o.SnapshotsRetained < 1 {
		return o, fmt.Errorf("raftlog: SnapshotsRetained %d < 1", o.SnapshotsRetained)
	}
	if o.EntryCacheBytes == 0 {
		o.EntryCacheBytes = entryCacheBytesDefault
	}
	if o.EntryCacheBytes < 0 {
		return o, fmt.Errorf("raftlog: EntryCacheBytes %d < 0", o.EntryCacheBytes)
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return o, nil
}

// loc is where an entry lives on disk.
type loc struct {
	term uint64
	seq  uint64
	off  uint32
	// payload is the record's payload length.
	payload uint32
}

// base is the snapshot the log starts after.
type base struct {
	// meta is the snapshot's metadata; index 0 means no snapshot.
	meta *raftpb.SnapshotMetadata
	desc Descriptor
	// name is the snapshot file; empty when index is 0.
	name string
}

func (b base) index() uint64 { return b.meta.GetIndex() }
func (b base) term() uint64  { return b.meta.GetTerm() }

// Log is a member's durable raft log: WAL segments and snapshot files under
// one directory, served to raft as a raft.Storage. It is owned by one
// goroutine; only SnapshotWriter (and a body OpenSnapshot returned) may be
// used from another.
type Log struct {
	fsys            diskio.FS
	walDir, snapDir string
	opts            Options
	logger          *zap.Logger
	lock            io.Closer

	// segs are the retained segments, oldest first.
	// Invariant: segs[i].seq == segs[0].seq+i; all but the last are sealed;
	// the last is the one appended to.
	segs []*segment

	// base is the snapshot the log starts after.
	base base
	// prevBase is the index of the newest snapshot file older than base; the
	// WAL is retained back to it, so that recovery can fall back to it.
	prevBase uint64

	// locs[i] is where entry base.index()+1+i lives.
	// Invariant: the last index is base.index()+len(locs).
	locs []loc
	// cache[i] is entry cacheLo+i, a suffix of the log.
	// Invariant: cacheLo+len(cache) == last index+1, cacheLo > base.index(),
	// cacheBytes is the sum of cachedBytes over cache and stays within
	// opts.EntryCacheBytes unless cache holds a single entry.
	cache      []*raftpb.Entry
	cacheLo    uint64
	cacheBytes int64

	// hs is the hard state as last saved.
	hs hardState
	// wbuf is reused to encode batches.
	wbuf []byte
	// scratch is the CRC seed buffer of the owner goroutine's records.
	scratch [16]byte
	// err, once set, is returned by every call: the Log is unusable.
	err error
}

var _ raft.Storage = (*Log)(nil)

// panicf reports a broken invariant. Callers test the condition first, so
// that the arguments are boxed only on failure (Save is allocation-free).
func panicf(format string, args ...any) {
	panic("raftlog: assertion failed: " + fmt.Sprintf(format, args...))
}

// fail records the first fatal error.
func (l *Log) fail(err error) error {
	if l.err == nil {
		l.err = err
		l.logger.Error("raftlog stopped", zap.Error(err))
	}
	return err
}

func (l *Log) lastIndex() uint64 { return l.base.index() + uint64(len(l.locs)) }

// term returns the term of entry i in [base.index(), lastIndex()].
func (l *Log) term(i uint64) uint64 {
	bi := l.base.index()
	if i < bi || i > l.lastIndex() {
		panicf("term(%d) outside [%d, %d]", i, bi, l.lastIndex())
	}
	if i == bi {
		return l.base.term()
	}
	return l.locs[i-bi-1].term
}

func (l *Log) cur() *segment { return l.segs[len(l.segs)-1] }

// Save persists one raft Ready: hs (nil or empty: unchanged) and ents
// (which replace the log from ents[0].Index on), then fsyncs iff sync.
// After Save returns nil the Storage methods reflect the new state. Any
// error is fatal: the Log becomes unusable.
func (l *Log) Save(hs *raftpb.HardState, ents []*raftpb.Entry, sync bool) error {
	if l.err != nil {
		return l.err
	}
	bi := l.base.index()
	for len(ents) > 0 && ents[0].GetIndex() <= bi {
		// Entries a snapshot already covers are committed and equal to ours.
		ents = ents[1:]
	}
	newHS := l.hs
	if hs != nil && !raft.IsEmptyHardState(hs) {
		newHS = hardStateOf(hs)
	}
	writeHS := newHS != l.hs
	if len(ents) > 0 {
		first := ents[0].GetIndex()
		if first > l.lastIndex()+1 {
			return l.fail(fmt.Errorf("raftlog: save of entries from %d leaves a gap after last index %d", first, l.lastIndex()))
		}
		for i, e := range ents {
			if e.GetIndex() != first+uint64(i) {
				return l.fail(fmt.Errorf("raftlog: save of non-contiguous entries: %d at position %d after %d", e.GetIndex(), i, first))
			}
		}
		if err := l.maybeRotate(first, ents, writeHS); err != nil {
			return l.fail(err)
		}
	} else if writeHS {
		if err := l.maybeRotate(l.lastIndex()+1, nil, true); err != nil {
			return l.fail(err)
		}
	}
	if writeHS || len(ents) > 0 {
		if err := l.writeBatch(newHS, writeHS, ents); err != nil {
			return l.fail(err)
		}
	}
	if sync && l.cur().synced < l.cur().end {
		if err := l.syncSegment(l.cur()); err != nil {
			return l.fail(err)
		}
	}
	l.hs = newHS
	if len(ents) > 0 {
		l.appendMemory(ents)
	}
	return nil
}

// batchBytes is the size of the records a Save writes.
func batchBytes(writeHS bool, ents []*raftpb.Entry) int64 {
	var n int64
	if writeHS {
		n += int64(recordBytes(hardStatePayloadBytes))
	}
	for _, e := range ents {
		n += int64(recordBytes(entryPayloadFixedBytes + len(e.GetData())))
	}
	return n
}

// maybeRotate starts a new segment when the batch does not fit the current
// one, or when its first entry is below the current segment's first index
// (segment names promise every entry in a segment is at or above it).
func (l *Log) maybeRotate(first uint64, ents []*raftpb.Entry, writeHS bool) error {
	for _, e := range ents {
		if n := len(e.GetData()); n > payloadBytesMax-entryPayloadFixedBytes {
			return fmt.Errorf("%w: entry %d of %d bytes", ErrTooLarge, e.GetIndex(), n)
		}
	}
	n := batchBytes(writeHS, ents)
	if n > batchBytesMax {
		return fmt.Errorf("%w: batch of %d bytes", ErrTooLarge, n)
	}
	c := l.cur()
	fits := c.end+n <= l.opts.SegmentBytes || c.end == segmentHeaderRecordBytes
	if fits && first >= c.first {
		return nil
	}
	return l.rotate(first)
}

// writeBatch encodes the hard state (first, so that a torn batch never
// leaves entries of a term the durable hard state has not reached) and
// the entries, and writes them in one WriteAt.
func (l *Log) writeBatch(hs hardState, writeHS bool, ents []*raftpb.Entry) error {
	c := l.cur()
	synced := uint32(c.synced)
	buf := l.wbuf[:0]
	off := c.end
	var start int
	if writeHS {
		buf, start = beginRecord(buf)
		buf = appendHardState(buf, hs)
		buf = finishRecord(&l.scratch, buf, start, c.seq, off+int64(start), recHardState, synced)
	}
	for _, e := range ents {
		buf, start = beginRecord(buf)
		buf = appendEntry(buf, e)
		buf = finishRecord(&l.scratch, buf, start, c.seq, off+int64(start), recEntry, synced)
	}
	if off+int64(len(buf)) > segmentFileBytesMax {
		panicf("segment %s would grow to %d bytes, past what a record's synced field can name", c.name, off+int64(len(buf)))
	}
	if _, err := c.f.WriteAt(buf, off); err != nil {
		return fmt.Errorf("raftlog: write %s at %d: %w", c.name, off, err)
	}
	// The index of locations follows the write; the cache follows in Save,
	// once the sync (if any) succeeded.
	if len(ents) > 0 {
		l.truncateMemory(ents[0].GetIndex())
		pos := off
		if writeHS {
			pos += int64(recordBytes(hardStatePayloadBytes))
		}
		for _, e := range ents {
			p := entryPayloadFixedBytes + len(e.GetData())
			l.locs = append(l.locs, loc{term: e.GetTerm(), seq: c.seq, off: uint32(pos), payload: uint32(p)})
			pos += int64(recordBytes(p))
		}
	}
	c.end = off + int64(len(buf))
	if cap(buf) > wbufRetainBytesMax {
		buf = nil
	}
	l.wbuf = buf
	return nil
}

// syncSegment fsyncs s; an error is final (never retried: after a failed
// fsync the page cache may already have dropped the dirty pages).
func (l *Log) syncSegment(s *segment) error {
	if err := crashPoint(FailpointWALBeforeSync); err != nil {
		return err
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("raftlog: fsync %s: %w", s.name, err)
	}
	s.synced = s.end
	return crashPoint(FailpointWALAfterSync)
}

// rotate seals the current segment and creates the next, whose log
// continues truncated to first-1.
func (l *Log) rotate(first uint64) error {
	return l.rotateTo(first, l.term(first-1), recSegment)
}

// rotateTo seals the current segment and creates the next, opening with a
// record of type typ: recSegment continues the log truncated to first-1
// (of term prevTerm), recSnapshot restarts it after a snapshot at first-1.
func (l *Log) rotateTo(first, prevTerm uint64, typ recordType) error {
	c := l.cur()
	buf, start := beginRecord(l.wbuf[:0])
	buf = finishRecord(&l.scratch, buf, start, c.seq, c.end, recSeal, uint32(c.synced))
	if _, err := c.f.WriteAt(buf, c.end); err != nil {
		return fmt.Errorf("raftlog: write %s at %d: %w", c.name, c.end, err)
	}
	c.end += int64(len(buf))
	if err := l.syncSegment(c); err != nil {
		return err
	}
	c.sealed = true
	return l.createSegment(c.seq+1, first, prevTerm, typ)
}

// createSegment writes a segment under a temp name, fsyncs it, renames it
// into place and fsyncs the directory: a segment under its final name is
// complete and durable from its header on.
func (l *Log) createSegment(seq, first, prevTerm uint64, typ recordType) error {
	name := l.walDir + "/" + segmentName(seq, first)
	tmp := name + tmpSuffix
	f, err := l.fsys.Create(tmp)
	if err != nil {
		return err
	}
	s := &segment{seq: seq, first: first, name: name, f: f, reset: typ == recSnapshot}
	if err := l.initSegment(s, tmp, prevTerm, typ); err != nil {
		f.Close()
		return err
	}
	if err := l.fsys.Rename(tmp, name); err != nil {
		f.Close()
		return err
	}
	if err := l.fsys.SyncDir(l.walDir); err != nil {
		f.Close()
		return fmt.Errorf("raftlog: fsync dir %s: %w", l.walDir, err)
	}
	// Reopened under its final name, so that the driver's errors (and a
	// simulated disk's fault rules) name the segment, not the temp file.
	if err := f.Close(); err != nil {
		return err
	}
	if s.f, err = l.fsys.Open(name); err != nil {
		return err
	}
	l.segs = append(l.segs, s)
	return nil
}

func (l *Log) initSegment(s *segment, tmp string, prevTerm uint64, typ recordType) error {
	if err := s.f.Preallocate(l.opts.SegmentBytes); err != nil {
		return fmt.Errorf("raftlog: preallocate %s: %w", tmp, err)
	}
	buf, start := beginRecord(l.wbuf[:0])
	buf = appendSegmentHeader(buf, segmentHeader{seq: s.seq, firstIndex: s.first, prevTerm: prevTerm, hs: l.hs})
	buf = finishRecord(&l.scratch, buf, start, s.seq, 0, typ, 0)
	if len(buf) != segmentHeaderRecordBytes {
		panicf("segment header of %d bytes", len(buf))
	}
	if _, err := s.f.WriteAt(buf, 0); err != nil {
		return fmt.Errorf("raftlog: write %s: %w", tmp, err)
	}
	s.end = int64(len(buf))
	return l.syncSegment(s)
}

// cachedBytes is what an entry is charged in the cache budget.
func cachedBytes(e *raftpb.Entry) int64 { return int64(len(e.GetData())) + 64 }

// truncateMemory drops entries from index i on (raft overwrote them).
func (l *Log) truncateMemory(i uint64) {
	bi := l.base.index()
	if i <= bi || i > l.lastIndex()+1 {
		panicf("truncate at %d outside (%d, %d]", i, bi, l.lastIndex()+1)
	}
	l.locs = l.locs[:i-bi-1]
	if i <= l.cacheLo {
		l.cache, l.cacheLo, l.cacheBytes = nil, i, 0
		return
	}
	k := i - l.cacheLo
	if k == uint64(len(l.cache)) {
		return
	}
	for _, e := range l.cache[k:] {
		l.cacheBytes -= cachedBytes(e)
	}
	// Entries returns fresh slices, never views of the cache, so its
	// elements may be reused.
	clear(l.cache[k:])
	l.cache = l.cache[:k]
}

// appendMemory adds saved entries to the cache and evicts from its front.
func (l *Log) appendMemory(ents []*raftpb.Entry) {
	if l.cacheLo+uint64(len(l.cache)) != ents[0].GetIndex() {
		panicf("cache ends at %d, appending %d", l.cacheLo+uint64(len(l.cache)), ents[0].GetIndex())
	}
	for _, e := range ents {
		l.cache = append(l.cache, e)
		l.cacheBytes += cachedBytes(e)
	}
	l.evict()
	if l.cacheLo+uint64(len(l.cache)) != l.lastIndex()+1 {
		panicf("cache ends at %d, last index %d", l.cacheLo+uint64(len(l.cache)), l.lastIndex())
	}
}

func (l *Log) evict() {
	k := 0
	for k < len(l.cache)-1 && l.cacheBytes > l.opts.EntryCacheBytes {
		l.cacheBytes -= cachedBytes(l.cache[k])
		l.cache[k] = nil
		k++
	}
	l.cache = l.cache[k:]
	l.cacheLo += uint64(k)
}

// InitialState implements raft.Storage.
func (l *Log) InitialState() (*raftpb.HardState, *raftpb.ConfState, error) {
	if l.err != nil {
		return nil, nil, l.err
	}
	cs := raftpb.EnsureConfState(cloneConfState(l.base.meta.GetConfState()))
	return l.hs.proto(), cs, nil
}

// FirstIndex implements raft.Storage.
func (l *Log) FirstIndex() (uint64, error) {
	if l.err != nil {
		return 0, l.err
	}
	return l.base.index() + 1, nil
}

// LastIndex implements raft.Storage.
func (l *Log) LastIndex() (uint64, error) {
	if l.err != nil {
		return 0, l.err
	}
	return l.lastIndex(), nil
}

// Term implements raft.Storage: the term of entry i in
// [FirstIndex()-1, LastIndex()].
func (l *Log) Term(i uint64) (uint64, error) {
	if l.err != nil {
		return 0, l.err
	}
	if i < l.base.index() {
		return 0, raft.ErrCompacted
	}
	if i > l.lastIndex() {
		return 0, raft.ErrUnavailable
	}
	return l.term(i), nil
}

// Snapshot implements raft.Storage: the base snapshot's metadata, with a
// Descriptor as Data; the body is read with OpenSnapshot.
func (l *Log) Snapshot() (*raftpb.Snapshot, error) {
	if l.err != nil {
		return nil, l.err
	}
	s := &raftpb.Snapshot{Metadata: cloneMeta(l.base.meta)}
	if l.base.index() > 0 {
		s.Data = l.base.desc.Marshal()
	}
	return raftpb.EnsureSnapshot(s), nil
}

// Entries implements raft.Storage: entries [lo, hi), at least one, then as
// many as fit maxSize (counted as raft counts them, proto.Size).
func (l *Log) Entries(lo, hi, maxSize uint64) ([]*raftpb.Entry, error) {
	if l.err != nil {
		return nil, l.err
	}
	if lo <= l.base.index() {
		return nil, raft.ErrCompacted
	}
	if hi > l.lastIndex()+1 {
		panicf("entries [%d, %d) past last index %d", lo, hi, l.lastIndex())
	}
	if lo >= hi {
		return nil, nil
	}
	var out []*raftpb.Entry
	var size uint64
	i := lo
	for i < hi && i < l.cacheLo {
		ents, err := l.readEntries(i, min(hi, l.cacheLo), maxSize-min(size, maxSize))
		if err != nil {
			return nil, l.fail(err)
		}
		if out == nil {
			out = make([]*raftpb.Entry, 0, min(hi-lo, uint64(len(ents))*2))
		}
		for _, e := range ents {
			s := entrySize(e)
			if len(out) > 0 && size+s > maxSize {
				return out[:len(out):len(out)], nil
			}
			out = append(out, e)
			size += s
			i++
		}
	}
	for ; i < hi; i++ {
		e := l.cache[i-l.cacheLo]
		s := entrySize(e)
		if len(out) > 0 && size+s > maxSize {
			break
		}
		out = append(out, e)
		size += s
	}
	return out[:len(out):len(out)], nil
}

// readEntries reads entries from [lo, hi) back from the segments: the
// records of one segment in one ReadAt of at most readChunkBytesMax (or one
// record), stopping early once about maxSize bytes are read. Each record is
// checked again as it is read.
func (l *Log) readEntries(lo, hi, maxSize uint64) ([]*raftpb.Entry, error) {
	bi := l.base.index()
	first := l.locs[lo-bi-1]
	s := l.segs[first.seq-l.segs[0].seq]
	startOff := int64(first.off)
	endOff := startOff
	n := uint64(0)
	var approx uint64
	for i := lo; i < hi; i++ {
		lc := l.locs[i-bi-1]
		recEnd := int64(lc.off) + int64(recordBytes(int(lc.payload)))
		if lc.seq != first.seq || int64(lc.off) < endOff || (n > 0 && recEnd-startOff > readChunkBytesMax) {
			break
		}
		endOff = recEnd
		n++
		approx += uint64(lc.payload)
		if approx > maxSize {
			break
		}
	}
	buf := make([]byte, endOff-startOff)
	if _, err := s.f.ReadAt(buf, startOff); err != nil {
		return nil, fmt.Errorf("raftlog: read %s at %d: %w", s.name, startOff, err)
	}
	ents := make([]raftpb.Entry, n)
	nums := make([]uint64, 2*n)
	types := make([]raftpb.EntryType, n)
	out := make([]*raftpb.Entry, n)
	for k := range n {
		lc := l.locs[lo+k-bi-1]
		off := int64(lc.off)
		size := recordBytes(int(lc.payload))
		b := buf[off-startOff : off-startOff+int64(size)]
		if (!l.opts.SkipCRC && binary.LittleEndian.Uint32(b) != recordCRC(&l.scratch, s.seq, off, b)) || recordType(b[8]) != recEntry {
			return nil, fmt.Errorf("%w: %s offset %d: entry %d fails its checksum on read-back", ErrCorrupt, s.name, off, lo+k)
		}
		p := b[recordHeaderBytes : recordHeaderBytes+int(lc.payload)]
		index, term, typ, ok := entryHead(p)
		if !ok || index != lo+k || term != lc.term {
			return nil, fmt.Errorf("%w: %s offset %d: read back entry %d/%d, want %d/%d", ErrCorrupt, s.name, off, index, term, lo+k, lc.term)
		}
		e := &ents[k]
		nums[2*k], nums[2*k+1], types[k] = index, term, typ
		e.Index, e.Term, e.Type = &nums[2*k], &nums[2*k+1], &types[k]
		if len(p) > entryPayloadFixedBytes {
			e.Data = p[entryPayloadFixedBytes:len(p):len(p)]
		}
		out[k] = e
	}
	return out, nil
}

// SnapshotSaved makes the committed snapshot meta the log's base: entries at
// or below it leave memory, segments only needed before the previous base
// and snapshots beyond the retention are released.
func (l *Log) SnapshotSaved(meta *raftpb.SnapshotMetadata) error {
	if l.err != nil {
		return l.err
	}
	idx, term := meta.GetIndex(), meta.GetTerm()
	if idx <= l.base.index() || idx > l.lastIndex() || l.term(idx) != term {
		return fmt.Errorf("%w: snapshot %d/%d for a log (%d, %d]", ErrSnapshotInvalid, idx, term, l.base.index(), l.lastIndex())
	}
	sf, err := l.loadSnapHeader(idx, term)
	if err != nil {
		return err
	}
	l.prevBase = l.base.index()
	k := idx - l.base.index()
	l.locs = l.locs[k:]
	if l.cacheLo <= idx {
		j := min(idx+1-l.cacheLo, uint64(len(l.cache)))
		for _, e := range l.cache[:j] {
			l.cacheBytes -= cachedBytes(e)
		}
		l.cache = l.cache[j:]
		l.cacheLo = idx + 1
	}
	l.base = base{meta: sf.meta, desc: sf.desc, name: sf.name}
	return l.release()
}

// ApplySnapshot makes a snapshot received from the leader (its body already
// committed with CreateSnapshot and Commit) the new base, discarding the
// whole log: it starts a segment whose header is the snapshot marker.
func (l *Log) ApplySnapshot(meta *raftpb.SnapshotMetadata) error {
	if l.err != nil {
		return l.err
	}
	idx, term := meta.GetIndex(), meta.GetTerm()
	if idx <= l.base.index() {
		return fmt.Errorf("%w: snapshot %d/%d is not newer than base %d", ErrSnapshotInvalid, idx, term, l.base.index())
	}
	sf, err := l.loadSnapHeader(idx, term)
	if err != nil {
		return err
	}
	// The Ready that carries the snapshot also carries a hard state of at
	// least its term; raising the term here (forgetting the vote, as a
	// member does on seeing a newer term) keeps a crash before that Save
	// from leaving a hard state older than the log.
	if l.hs.term < term {
		l.hs.term, l.hs.vote = term, 0
	}
	l.hs.commit = max(l.hs.commit, idx)
	if err := l.rotateTo(idx+1, term, recSnapshot); err != nil {
		return l.fail(err)
	}
	l.prevBase = l.base.index()
	l.base = base{meta: sf.meta, desc: sf.desc, name: sf.name}
	l.locs = l.locs[:0:0]
	l.cache, l.cacheLo, l.cacheBytes = nil, idx+1, 0
	return l.release()
}

// loadSnapHeader checks that the committed snapshot file for (idx, term)
// exists and names that snapshot.
func (l *Log) loadSnapHeader(idx, term uint64) (snapFile, error) {
	name := l.snapDir + "/" + snapshotName(idx, term)
	f, err := l.fsys.Open(name)
	if err != nil {
		return snapFile{}, fmt.Errorf("%w: %w", ErrSnapshotInvalid, err)
	}
	defer f.Close()
	sf, err := readSnapHeader(f, name)
	if err != nil {
		return snapFile{}, err
	}
	if sf.meta.GetIndex() != idx || sf.meta.GetTerm() != term {
		return snapFile{}, fmt.Errorf("%w: %s offset 0: holds snapshot %d/%d", ErrCorrupt, name, sf.meta.GetIndex(), sf.meta.GetTerm())
	}
	return sf, nil
}

// release removes the oldest segments whose live entries are all at or
// below prevBase, and the snapshot files beyond the retention (never base
// or prevBase).
func (l *Log) release() error {
	n := l.releasableSegments()
	snaps, err := l.releasableSnapshots()
	if err != nil {
		return l.fail(err)
	}
	if n == 0 && len(snaps) == 0 {
		return nil
	}
	if err := crashPoint(FailpointBeforeRelease); err != nil {
		return l.fail(err)
	}
	for _, s := range l.segs[:n] {
		if err := s.f.Close(); err != nil {
			return l.fail(err)
		}
		if err := l.fsys.Remove(s.name); err != nil {
			return l.fail(err)
		}
		l.logger.Info("released segment", zap.String("file", s.name))
	}
	if n > 0 {
		l.segs = append([]*segment(nil), l.segs[n:]...)
		if err := l.fsys.SyncDir(l.walDir); err != nil {
			return l.fail(fmt.Errorf("raftlog: fsync dir %s: %w", l.walDir, err))
		}
	}
	for _, name := range snaps {
		if err := l.fsys.Remove(name); err != nil {
			return l.fail(err)
		}
		l.logger.Info("released snapshot", zap.String("file", name))
	}
	if len(snaps) > 0 {
		if err := l.fsys.SyncDir(l.snapDir); err != nil {
			return l.fail(fmt.Errorf("raftlog: fsync dir %s: %w", l.snapDir, err))
		}
	}
	return nil
}

// releasableSegments counts the oldest segments that recovery no longer
// needs. Every segment header truncates the log to its firstIndex-1, so the
// live entries of segment k are below the smallest first index after it,
// and none are live once a later segment restarts after a snapshot.
func (l *Log) releasableSegments() int {
	upto := l.prevBase
	bound := make([]uint64, len(l.segs))
	lowest, reset := ^uint64(0), false
	for k := len(l.segs) - 1; k >= 0; k-- {
		bound[k] = lowest
		if reset {
			bound[k] = 0
		}
		lowest = min(lowest, l.segs[k].first)
		reset = reset || l.segs[k].reset && l.segs[k].first <= l.base.index()+1
	}
	n := 0
	for n < len(l.segs)-1 && bound[n] <= upto+1 {
		n++
	}
	return n
}

// releasableSnapshots lists the snapshot files beyond the retention.
func (l *Log) releasableSnapshots() ([]string, error) {
	names, err := l.fsys.List(l.snapDir)
	if err != nil {
		return nil, err
	}
	var snaps []string
	for _, n := range names {
		if _, _, ok := parseSnapshotName(n); ok {
			snaps = append(snaps, n)
		}
	}
	var out []string
	keep := l.opts.SnapshotsRetained
	for i := len(snaps) - 1; i >= 0; i-- {
		idx, _, _ := parseSnapshotName(snaps[i])
		full := l.snapDir + "/" + snaps[i]
		if keep > 0 || idx == l.base.index() || idx == l.prevBase {
			keep--
			continue
		}
		out = append(out, full)
	}
	return out, nil
}

// OpenSnapshot opens the body of the base snapshot. The reader checks the
// body's checksum as it reads; a mismatch at the end is an error wrapping
// ErrCorrupt.
func (l *Log) OpenSnapshot() (*raftpb.SnapshotMetadata, io.ReadCloser, error) {
	if l.err != nil {
		return nil, nil, l.err
	}
	if l.base.index() == 0 {
		return nil, nil, ErrNoSnapshot
	}
	f, err := l.fsys.Open(l.base.name)
	if err != nil {
		return nil, nil, err
	}
	sf, err := readSnapHeader(f, l.base.name)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	r := &bodyReader{f: f, name: l.base.name, off: sf.bodyOff, left: sf.desc.BodyBytes, want: sf.desc.BodyCRC}
	return cloneMeta(sf.meta), snapshotReadCloser{r}, nil
}

// writeSyncMarker syncs what is unsynced, then writes and syncs a recSync
// vouching for all of it.
func (l *Log) writeSyncMarker() error {
	c := l.cur()
	if c.synced < c.end {
		if err := l.syncSegment(c); err != nil {
			return err
		}
	}
	buf, start := beginRecord(l.wbuf[:0])
	buf = finishRecord(&l.scratch, buf, start, c.seq, c.end, recSync, uint32(c.synced))
	if _, err := c.f.WriteAt(buf, c.end); err != nil {
		return fmt.Errorf("raftlog: write %s at %d: %w", c.name, c.end, err)
	}
	c.end += int64(len(buf))
	l.wbuf = buf
	return l.syncSegment(c)
}

// Close writes a sync marker (unless the Log failed), so that a later
// Open tells any damage to the log from a torn tail, and closes every file.
// The Log is unusable afterwards.
func (l *Log) Close() error {
	if errors.Is(l.err, ErrClosed) {
		return nil
	}
	var errs []error
	if l.err == nil && len(l.segs) > 0 {
		errs = append(errs, l.writeSyncMarker())
	}
	for _, s := range l.segs {
		errs = append(errs, s.f.Close())
	}
	if l.lock != nil {
		errs = append(errs, l.lock.Close())
	}
	l.err = ErrClosed
	return errors.Join(errs...)
}

func cloneMeta(m *raftpb.SnapshotMetadata) *raftpb.SnapshotMetadata {
	return raftpb.EnsureSnapshotMetadata(&raftpb.SnapshotMetadata{
		Index:     new(m.GetIndex()),
		Term:      new(m.GetTerm()),
		ConfState: cloneConfState(m.GetConfState()),
	})
}

func cloneConfState(cs *raftpb.ConfState) *raftpb.ConfState {
	if cs == nil {
		return nil
	}
	return &raftpb.ConfState{
		Voters:         append([]uint64(nil), cs.GetVoters()...),
		Learners:       append([]uint64(nil), cs.GetLearners()...),
		VotersOutgoing: append([]uint64(nil), cs.GetVotersOutgoing()...),
		LearnersNext:   append([]uint64(nil), cs.GetLearnersNext()...),
		AutoLeave:      new(cs.GetAutoLeave()),
	}
}
