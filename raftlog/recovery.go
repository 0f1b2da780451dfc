package raftlog

import (
	"cmp"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/basaltdb/basalt/diskio"
)

// damage is what recovery knows where a segment's records stop before a
// seal: a zero header or a damaged record at that offset.
type damage struct {
	// newest: the segment is the newest one, the only one ever appended to
	// without a seal and a successor behind it.
	newest bool
	// zero: the header at the offset is all zeros (else: a damaged record).
	zero bool
	// vouched: the offset is below the synced offset that some valid record
	// of the segment (before or after it) claims, or inside the header,
	// which is synced before the segment gets its name.
	vouched bool
	// bytesAfter: some byte at or after the offset is not zero.
	bytesAfter bool
}

// decision is what recovery does about a damage.
type decision uint8

const (
	// decideEnd: the log ends here; the rest of the file is preallocated
	// space.
	decideEnd decision = iota + 1
	// decideTruncate: a torn tail. The bytes from the offset on were
	// written after the last sync that returned, so no Save that returned
	// nil with sync wrote them; they are copied aside and cut off.
	decideTruncate
	// decideFailStop: synced data is damaged. Recovery stops with an error
	// naming the file and offset; nothing is truncated.
	decideFailStop
	// decideImpossible: the inputs contradict each other.
	decideImpossible
)

func (d decision) String() string {
	return [...]string{"", "end", "truncate", "fail-stop", "impossible"}[d]
}

// recoveryCases is the decision table, one row per combination of the
// inputs (in the order of damage.index). Legend: new = newest segment,
// zero = zero header at the offset, vouched = below a claimed sync,
// after = nonzero bytes at or after the offset.
var recoveryCases = [16]struct {
	d   decision
	why string
}{
	//  new   zero   vouched after
	/* F     F      F       F */ {decideImpossible, "a damaged record is a nonzero byte"},
	/* F     F      F       T */ {decideFailStop, "a segment with a successor was sealed and synced whole before the successor existed"},
	/* F     F      T       F */ {decideImpossible, "a damaged record is a nonzero byte"},
	/* F     F      T       T */ {decideFailStop, "a synced record is damaged"},
	/* F     T      F       F */ {decideFailStop, "a segment with a successor ends before its seal"},
	/* F     T      F       T */ {decideFailStop, "a segment with a successor has a hole before its seal"},
	/* F     T      T       F */ {decideFailStop, "synced bytes of a sealed segment read as zeros"},
	/* F     T      T       T */ {decideFailStop, "synced bytes of a sealed segment read as zeros"},
	/* T     F      F       F */ {decideImpossible, "a damaged record is a nonzero byte"},
	/* T     F      F       T */ {decideTruncate, "a torn write after the last completed sync"},
	/* T     F      T       F */ {decideImpossible, "a damaged record is a nonzero byte"},
	/* T     F      T       T */ {decideFailStop, "a synced record is damaged"},
	/* T     T      F       F */ {decideEnd, "end of the log"},
	/* T     T      F       T */ {decideTruncate, "unsynced bytes after a hole: pages of an unsynced write reached the disk out of order"},
	/* T     T      T       F */ {decideFailStop, "synced bytes read as zeros (a lost or misdirected write)"},
	/* T     T      T       T */ {decideFailStop, "synced bytes read as zeros (a lost or misdirected write)"},
}

func (d damage) index() int {
	i := 0
	for _, b := range [...]bool{d.newest, d.zero, d.vouched, d.bytesAfter} {
		i <<= 1
		if b {
			i |= 1
		}
	}
	return i
}

// decide looks the damage up in recoveryCases; an impossible cell is a bug
// in the scanner, not a property of the disk.
func decide(d damage) (decision, string) {
	c := recoveryCases[d.index()]
	if c.d == decideImpossible {
		panicf("recovery reached an impossible case %+v: %s", d, c.why)
	}
	return c.d, c.why
}

// scanResult is what scanning one segment found.
type scanResult struct {
	// end is the end of the valid records; the first damage (if any) is
	// there.
	end    int64
	sealed bool
	// vouched is the largest synced offset a valid record claims.
	vouched int64
	// dmg is set when !sealed.
	dmg damage
	// bytesEnd is the end of the last nonzero 8-byte word at or after end.
	bytesEnd int64
}

// corruptf builds an ErrCorrupt error naming file and offset.
func corruptf(file string, off int64, format string, args ...any) error {
	return fmt.Errorf("%w: %s offset %d: %s", ErrCorrupt, file, off, fmt.Sprintf(format, args...))
}

// scanSegment reads the records of s in order, feeding the valid ones to
// visit, up to its seal or its first damage; for the newest segment it
// then reads on to the end of the file to learn what lies past the damage.
func scanSegment(s *segment, newest bool, visit func(rec record, off int64) error) (scanResult, error) {
	size, err := s.f.Size()
	if err != nil {
		return scanResult{}, err
	}
	r := &fileReader{f: s.f, size: size, skipCRC: s.skipCRC}
	res := scanResult{vouched: segmentHeaderRecordBytes}
	off := int64(0)
	var st recordStatus
	for {
		var rec record
		rec, st, err = r.readRecord(s.seq, off)
		if err != nil {
			return scanResult{}, fmt.Errorf("raftlog: read %s at %d: %w", s.name, off, err)
		}
		if st != recordValid {
			break
		}
		if int64(rec.synced) > off {
			return scanResult{}, corruptf(s.name, off, "record claims %d bytes synced before it was written", rec.synced)
		}
		res.vouched = max(res.vouched, int64(rec.synced))
		if err := visit(rec, off); err != nil {
			return scanResult{}, err
		}
		off += int64(rec.size)
		if rec.typ == recSeal {
			res.end, res.sealed = off, true
			return res, nil
		}
	}
	res.end, res.bytesEnd = off, off
	if newest {
		if err := scanPast(r, s.seq, off, &res); err != nil {
			return scanResult{}, fmt.Errorf("raftlog: read %s: %w", s.name, err)
		}
	} else if st != recordZero {
		res.bytesEnd = off + 1
	}
	res.dmg = damage{
		newest:     newest,
		zero:       st == recordZero,
		vouched:    off < res.vouched,
		bytesAfter: res.bytesEnd > off,
	}
	return res, nil
}

// scanPast reads [off, EOF) of a newest segment for valid records (whose
// synced claims can prove that the damage at off is in synced data) and
// for the end of its nonzero bytes.
func scanPast(r *fileReader, seq uint64, off int64, res *scanResult) error {
	p := off
	for p < r.size {
		b, err := r.bytes(p, readChunkBytesMax)
		if err != nil {
			return err
		}
		i := 0
		for i+8 <= len(b) && allZero(b[i:i+8]) {
			i += 8
		}
		if i+8 > len(b) && allZero(b[i:]) {
			p += int64(len(b))
			continue
		}
		p += int64(i)
		rec, st, err := r.readRecord(seq, p)
		if err != nil {
			return err
		}
		if st == recordValid && int64(rec.synced) <= p {
			res.vouched = max(res.vouched, int64(rec.synced))
			p += int64(rec.size)
			res.bytesEnd = p
			continue
		}
		p = min(p+8, r.size)
		res.bytesEnd = p
	}
	return nil
}

// replay rebuilds the log from the records of the retained segments, in
// order. Invariant: the log holds entries (start, start+len(locs)].
type replay struct {
	started   bool
	start     uint64
	startTerm uint64
	locs      []loc
	hs        hardState
}

func (r *replay) last() uint64 { return r.start + uint64(len(r.locs)) }

func (r *replay) termAt(i uint64) uint64 {
	if i == r.start {
		return r.startTerm
	}
	return r.locs[i-r.start-1].term
}

// visit applies one valid record of segment s at offset off.
func (r *replay) visit(s *segment, rec record, off int64) error {
	isHeader := rec.typ == recSegment || rec.typ == recSnapshot
	if isHeader != (off == 0) {
		return corruptf(s.name, off, "%s record at offset %d", rec.typ, off)
	}
	switch rec.typ {
	case recSegment, recSnapshot:
		h, err := decodeSegmentHeader(rec.payload)
		if err != nil {
			return corruptf(s.name, off, "%v", err)
		}
		if h.seq != s.seq || h.firstIndex != s.first {
			return corruptf(s.name, off, "header names segment %d first index %d", h.seq, h.firstIndex)
		}
		s.reset = rec.typ == recSnapshot
		r.hs = h.hs
		at := h.firstIndex - 1
		switch {
		case !r.started || rec.typ == recSnapshot || at < r.start:
			r.start, r.startTerm, r.locs, r.started = at, h.prevTerm, r.locs[:0], true
		case at > r.last():
			return corruptf(s.name, off, "segment starts at %d after a log ending at %d", h.firstIndex, r.last())
		case r.termAt(at) != h.prevTerm:
			return corruptf(s.name, off, "segment says entry %d has term %d, the log has %d", at, h.prevTerm, r.termAt(at))
		default:
			r.locs = r.locs[:at-r.start]
		}
	case recHardState:
		hs, ok := decodeHardState(rec.payload)
		if !ok {
			return corruptf(s.name, off, "hard state of %d bytes", len(rec.payload))
		}
		r.hs = hs
	case recEntry:
		index, term, _, ok := entryHead(rec.payload)
		switch {
		case !ok:
			return corruptf(s.name, off, "malformed entry record")
		case index < s.first || index <= r.start || index > r.last()+1:
			return corruptf(s.name, off, "entry %d outside (%d, %d] in a segment from %d", index, r.start, r.last()+1, s.first)
		case term < r.termAt(index-1):
			return corruptf(s.name, off, "entry %d has term %d below the previous entry's %d", index, term, r.termAt(index-1))
		}
		r.locs = append(r.locs[:index-r.start-1], loc{term: term, seq: s.seq, off: uint32(off), payload: uint32(len(rec.payload))})
	case recSeal, recSync:
		if len(rec.payload) != 0 {
			return corruptf(s.name, off, "%s record with a payload", rec.typ)
		}
	}
	return nil
}

// Open opens (creating if empty) the log whose files live under dir on
// fsys: dir/wal/*.wal and dir/snap/*.snap. It runs recovery per the
// decision table and returns a Log ready to append. A fresh dir has no
// state.
func Open(fsys diskio.FS, dir string, opts Options) (*Log, error) {
	opts, err := opts.normalized()
	if err != nil {
		return nil, err
	}
	l := &Log{
		fsys:    fsys,
		walDir:  dir + "/wal",
		snapDir: dir + "/snap",
		opts:    opts,
		logger:  opts.Logger,
		base:    base{meta: cloneMeta(nil)},
	}
	if err := l.open(dir); err != nil {
		for _, s := range l.segs {
			s.f.Close()
		}
		if l.lock != nil {
			l.lock.Close()
		}
		return nil, err
	}
	return l, nil
}

func (l *Log) open(dir string) error {
	if err := l.makeDirs(dir); err != nil {
		return err
	}
	lock, err := l.fsys.Lock(l.walDir + "/LOCK")
	if err != nil {
		return err
	}
	l.lock = lock
	stale, err := l.listSegments()
	if err != nil {
		return err
	}
	snaps, err := l.listSnapshots()
	if err != nil {
		return err
	}
	if len(l.segs) == 0 {
		if len(snaps) > 0 {
			return corruptf(l.walDir, 0, "no segment, but %d snapshot files", len(snaps))
		}
		l.cacheLo = 1
		l.logger.Info("created log", zap.String("dir", dir))
		return l.createSegment(0, 1, 0, recSegment)
	}
	r, err := l.replaySegments(l.segs)
	if err != nil {
		return err
	}
	if err := l.chooseBase(r, snaps); err != nil {
		return err
	}
	if err := l.removeAll(l.walDir, stale, "removing segment a release left behind"); err != nil {
		return err
	}
	c := l.cur()
	if c.sealed {
		return l.createSegment(c.seq+1, l.lastIndex()+1, l.term(l.lastIndex()), recSegment)
	}
	// Bytes that survived a crash may still sit in the page cache only:
	// make them durable, then say so with a sync marker, so that from now
	// on damage to them is told apart from a torn tail.
	if err := l.syncSegment(c); err != nil {
		return err
	}
	return l.writeSyncMarker()
}

// makeDirs creates dir/wal and dir/snap, making new directory entries
// durable.
func (l *Log) makeDirs(dir string) error {
	for _, d := range []string{l.walDir, l.snapDir} {
		_, err := l.fsys.List(d)
		if err == nil {
			continue
		}
		if !errors.Is(err, diskio.ErrNotExist) {
			return err
		}
		if err := l.fsys.MkdirAll(d); err != nil {
			return err
		}
		for _, p := range []string{dir, path.Dir(dir)} {
			if err := l.fsys.SyncDir(p); err != nil {
				return fmt.Errorf("raftlog: fsync dir %s: %w", p, err)
			}
		}
	}
	return nil
}

// listSegments opens the segments recovery uses: the newest run of
// consecutive sequence numbers. It removes temp files (segments never
// renamed into place) and returns the names of the segments before a gap
// (left by a release that a crash interrupted), to be removed once recovery
// has succeeded without them.
func (l *Log) listSegments() (stale []string, err error) {
	names, err := l.fsys.List(l.walDir)
	if err != nil {
		return nil, err
	}
	if len(names) > segmentsListedMax {
		return nil, fmt.Errorf("raftlog: %d files in %s, more than %d", len(names), l.walDir, segmentsListedMax)
	}
	var segs []*segment
	var tmps []string
	for _, n := range names {
		if strings.HasSuffix(n, walSuffix+tmpSuffix) {
			tmps = append(tmps, l.walDir+"/"+n)
			continue
		}
		if seq, first, ok := parseSegmentName(n); ok {
			segs = append(segs, &segment{seq: seq, first: first, name: l.walDir + "/" + n})
		}
	}
	if err := l.removeAll(l.walDir, tmps, "removing segment never renamed into place"); err != nil {
		return nil, err
	}
	slices.SortFunc(segs, func(a, b *segment) int { return cmp.Compare(a.seq, b.seq) })
	k := len(segs) - 1
	for k > 0 && segs[k-1].seq+1 == segs[k].seq {
		k--
	}
	for _, s := range segs[:max(k, 0)] {
		stale = append(stale, s.name)
	}
	for _, s := range segs[max(k, 0):] {
		if s.f, err = l.fsys.Open(s.name); err != nil {
			return nil, err
		}
		l.segs = append(l.segs, s)
	}
	return stale, nil
}

// removeAll removes the files names of dir and makes that durable.
func (l *Log) removeAll(dir string, names []string, why string) error {
	for _, n := range names {
		l.logger.Info(why, zap.String("file", n))
		if err := l.fsys.Remove(n); err != nil {
			return err
		}
	}
	if len(names) == 0 {
		return nil
	}
	if err := l.fsys.SyncDir(dir); err != nil {
		return fmt.Errorf("raftlog: fsync dir %s: %w", dir, err)
	}
	return nil
}

// listSnapshots returns the snapshot files, newest first, removing temp
// files of snapshots never committed.
func (l *Log) listSnapshots() ([]string, error) {
	names, err := l.fsys.List(l.snapDir)
	if err != nil {
		return nil, err
	}
	var snaps, tmps []string
	for _, n := range names {
		if strings.HasSuffix(n, snapSuffix+tmpSuffix) {
			tmps = append(tmps, l.snapDir+"/"+n)
		} else if _, _, ok := parseSnapshotName(n); ok {
			snaps = append(snaps, n)
		}
	}
	if err := l.removeAll(l.snapDir, tmps, "removing uncommitted snapshot"); err != nil {
		return nil, err
	}
	slices.Reverse(snaps)
	return snaps, nil
}

// replaySegments scans every segment, applies the decision table to where
// the records stop, and truncates a torn tail of the newest segment.
func (l *Log) replaySegments(segs []*segment) (*replay, error) {
	r := &replay{}
	for i, s := range segs {
		newest := i == len(segs)-1
		s.skipCRC = l.opts.SkipCRC
		res, err := scanSegment(s, newest, func(rec record, off int64) error { return r.visit(s, rec, off) })
		if err != nil {
			return nil, err
		}
		if res.sealed {
			s.end, s.synced, s.sealed = res.end, res.end, true
			continue
		}
		d, why := decide(res.dmg)
		switch d {
		case decideEnd:
			s.end, s.synced = res.end, res.end
		case decideTruncate:
			if err := l.truncateTorn(s, res, why); err != nil {
				return nil, err
			}
		case decideFailStop:
			if newest {
				why += fmt.Sprintf(" (synced through %d)", res.vouched)
			}
			return nil, corruptf(s.name, res.end, "%s", why)
		}
	}
	return r, nil
}

// truncateTorn copies the torn tail [res.end, res.bytesEnd) of s aside to
// `<segment>.<offset>.broken`, makes the copy durable, then cuts the
// segment there, re-preallocates it and makes that durable, so that the
// torn bytes can never come back behind new records.
func (l *Log) truncateTorn(s *segment, res scanResult, why string) error {
	at, n := res.end, res.bytesEnd-res.end
	l.logger.Warn("truncating torn WAL tail",
		zap.String("file", s.name), zap.Int64("offset", at), zap.Int64("bytes", n), zap.String("reason", why))
	tail := make([]byte, n)
	if _, err := s.f.ReadAt(tail, at); err != nil {
		return fmt.Errorf("raftlog: read %s at %d: %w", s.name, at, err)
	}
	broken := fmt.Sprintf("%s.%016x%s", s.name, at, brokenSuffix)
	bf, err := l.fsys.Create(broken)
	if err != nil {
		return err
	}
	_, werr := bf.WriteAt(tail, 0)
	serr := bf.Sync()
	if err := errors.Join(werr, serr, bf.Close()); err != nil {
		return fmt.Errorf("raftlog: save torn tail to %s: %w", broken, err)
	}
	if err := l.fsys.SyncDir(l.walDir); err != nil {
		return fmt.Errorf("raftlog: fsync dir %s: %w", l.walDir, err)
	}
	if err := s.f.Truncate(at); err != nil {
		return err
	}
	if err := s.f.Preallocate(l.opts.SegmentBytes); err != nil {
		return err
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("raftlog: fsync %s: %w", s.name, err)
	}
	s.end, s.synced = at, at
	return nil
}

// chooseBase picks the newest snapshot that is intact and that the
// replayed log can continue from, then builds the in-memory log after it.
// A snapshot is usable when the log holds its index with its term (or
// starts right after it), so one committed but never announced to the Log
// (a crash before SnapshotSaved) is used too, while one received but never
// applied (a crash before ApplySnapshot's marker) is not.
func (l *Log) chooseBase(r *replay, snaps []string) error {
	var chosen *snapFile
	var skipped []string
	for _, n := range snaps {
		idx, term, _ := parseSnapshotName(n)
		name := l.snapDir + "/" + n
		usable := idx >= r.start && idx <= r.last() && r.termAt(idx) == term
		if !usable {
			l.logger.Info("snapshot not usable with the log, ignored", zap.String("file", name),
				zap.Uint64("log-start", r.start), zap.Uint64("log-last", r.last()))
			continue
		}
		sf, err := verifySnapshot(l.fsys, name)
		if err == nil && (sf.meta.GetIndex() != idx || sf.meta.GetTerm() != term) {
			err = corruptf(name, 0, "holds snapshot %d/%d", sf.meta.GetIndex(), sf.meta.GetTerm())
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				return err
			}
			l.logger.Warn("snapshot damaged, falling back to an older one", zap.String("file", name), zap.Error(err))
			skipped = append(skipped, name)
			continue
		}
		chosen = &sf
		break
	}
	if chosen != nil {
		for _, n := range snaps {
			if idx, _, _ := parseSnapshotName(n); idx < chosen.meta.GetIndex() {
				l.prevBase = idx
				break
			}
		}
	}
	if chosen == nil && r.start > 0 {
		if len(skipped) > 0 {
			// The damaged snapshot is what the operator must hear of: the log needs it (or
			// its replacement from another member).
			return corruptf(skipped[0], 0, "damaged, and no intact snapshot covers the log, which starts after entry %d", r.start)
		}
		return corruptf(l.segs[0].name, 0, "the log starts after entry %d and no intact snapshot covers it", r.start)
	}
	for _, name := range skipped {
		if err := l.fsys.Rename(name, name+brokenSuffix); err != nil {
			return err
		}
	}
	if len(skipped) > 0 {
		if err := l.fsys.SyncDir(l.snapDir); err != nil {
			return fmt.Errorf("raftlog: fsync dir %s: %w", l.snapDir, err)
		}
	}
	if chosen != nil {
		l.base = base{meta: chosen.meta, desc: chosen.desc, name: chosen.name}
	}
	bi := l.base.index()
	l.locs = r.locs[bi-r.start:]
	l.cacheLo = l.lastIndex() + 1
	l.hs = r.hs
	if l.hs.commit < bi {
		// The snapshot holds only committed entries.
		l.hs.commit = bi
	}
	if l.hs.commit > l.lastIndex() {
		// A batch writes the hard state before its entries; a torn batch
		// can keep the commit index without the entries it covers.
		l.logger.Info("commit index past the recovered log, lowered",
			zap.Uint64("commit", l.hs.commit), zap.Uint64("last", l.lastIndex()))
		l.hs.commit = l.lastIndex()
	}
	l.logger.Info("recovered log", zap.Uint64("snapshot", bi), zap.Uint64("last", l.lastIndex()),
		zap.Uint64("term", l.hs.term), zap.Uint64("commit", l.hs.commit), zap.Int("segments", len(l.segs)))
	return nil
}
