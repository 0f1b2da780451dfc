package mvcc

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
)

// The logical state of a store is its revision, its compaction revision and, for every key, the
// versions retained at the compaction revision (keyIndex.retained) plus a tombstone made at the
// compaction revision itself (keyIndex.carried), which a watch starting there delivers. WriteTo
// writes exactly that, so two stores with the same logical state write the same bytes, whatever
// their physical compaction progress. HashKV hashes the retained records only, as etcd leaves
// a tombstone at the compaction revision out of its hash.
//
// Stream format, version 2 (version 1, still read, did not carry the tombstones made at the
// compaction revision, so a store restored from it has history from compactRev+1 only).
// Fixed-width integers are big-endian uint32.
//
//	stream  = magic "basaltKV" | formatVersion uint32 = 2 | frame* | end
//	frame   = n uint32 (1..snapshotFrameBytesMax) | payload[n] | crc uint32
//	end     = 0 uint32 | crc uint32
//
//	+----------+-------------------------+----------+
//	| n (4 B)  | payload (n bytes)       | crc (4 B)|   one frame
//	+----------+-------------------------+----------+
//
// The CRC-32C (Castagnoli) is chained through the whole stream: it starts as the CRC of magic and
// formatVersion, and each frame's crc (and the end's) covers the previous crc, its own length
// word and its payload. Restore checks a frame before interpreting any of its bytes, so damage,
// truncation, a dropped or a reordered frame all fail with ErrCorrupt. The stream ends at its end
// marker and Restore reads nothing beyond it, so a stream can be embedded in a larger file.
//
// The payloads, concatenated, form the body. uvarint and varint are encoding/binary's.
//
//	body    = rev uvarint | compactRev uvarint | compacted byte (0 or 1) | record* | 0x00
//	record  = 0x01 | keyLen uvarint | key | n uvarint (>= 1) | version * n     keys ascending
//	version = main uvarint | sub uvarint | ver uvarint (0: tombstone) | create uvarint |
//	          lease varint | valueLen uvarint | value                        revisions ascending
//
// HashKV(rev) is the CRC-32C of the records, in the same encoding, of the versions retained at the
// compaction revision and with main revision <= rev (keys left with no version are skipped).
const (
	snapshotMagic         = "basaltKV"
	snapshotFormatVersion = 2
	// snapshotFormatVersionNoCompactTombstones is the older format Restore still reads.
	snapshotFormatVersionNoCompactTombstones = 1

	recordEnd = 0x00
	recordKey = 0x01
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// HashKV returns the CRC-32C of the logical content readable at revisions [CompactRev, rev] (see
// the format above), and the compaction revision. rev <= 0 means the current revision. Equal
// logical states give equal hashes whatever the physical compaction progress.
func (v *View) HashKV(rev int64) (hash uint32, compactRev int64, err error) {
	if rev > 0 && rev < v.st.compactRev {
		return 0, v.st.compactRev, ErrCompacted
	}
	if rev > v.st.rev {
		return 0, v.st.compactRev, ErrFutureRev
	}
	if rev <= 0 {
		rev = v.st.rev
	}
	h := &hashSink{}
	v.st.visitAll("", func(ki *keyIndex) bool {
		if vs := ki.retained(v.st.compactRev, rev); len(vs) > 0 {
			h.scratch = writeRecord(h, h.scratch, ki, vs)
		}
		return true
	})
	return h.crc, v.st.compactRev, nil
}

// WriteTo writes the view's logical state to w in the stream format above.
func (v *View) WriteTo(w io.Writer) (int64, error) {
	e := &encoder{w: w, frame: make([]byte, 4, 4+snapshotFrameBytesMax+4)}
	var hdr [12]byte
	copy(hdr[:], snapshotMagic)
	binary.BigEndian.PutUint32(hdr[8:], snapshotFormatVersion)
	e.crc = crc32.Update(0, crcTable, hdr[:])
	e.writeRaw(hdr[:])
	scratch := binary.AppendUvarint(nil, uint64(v.st.rev))
	scratch = binary.AppendUvarint(scratch, uint64(v.st.compactRev))
	scratch = append(scratch, boolByte(v.st.compacted))
	e.write(scratch)
	v.st.visitAll("", func(ki *keyIndex) bool {
		if vs := ki.carried(v.st.compactRev, v.st.rev); len(vs) > 0 {
			scratch = writeRecord(e, scratch, ki, vs)
		}
		return e.err == nil
	})
	e.write([]byte{recordEnd})
	e.flush()
	e.writeEnd()
	return e.n, e.err
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

type byteSink interface{ write(p []byte) }

// writeRecord writes the record of key and vs to sink, using scratch for the fixed part of each
// version, and returns scratch for reuse.
func writeRecord(sink byteSink, scratch []byte, ki *keyIndex, vs []version) []byte {
	b := append(scratch[:0], recordKey)
	b = binary.AppendUvarint(b, uint64(len(ki.key)))
	sink.write(b)
	sink.write(keyBytes(ki.key))
	b = binary.AppendUvarint(b[:0], uint64(len(vs)))
	for i := range vs {
		v := &vs[i]
		b = binary.AppendUvarint(b, uint64(v.mod.Main))
		b = binary.AppendUvarint(b, uint64(v.mod.Sub))
		b = binary.AppendUvarint(b, uint64(v.ver))
		b = binary.AppendUvarint(b, uint64(v.create))
		b = binary.AppendVarint(b, v.lease)
		b = binary.AppendUvarint(b, uint64(v.val.n))
		sink.write(b)
		sink.write(ki.value(v))
		b = b[:0]
	}
	return b
}

type hashSink struct {
	crc     uint32
	scratch []byte
}

func (h *hashSink) write(p []byte) { h.crc = crc32.Update(h.crc, crcTable, p) }

// encoder cuts the body into frames.
type encoder struct {
	w io.Writer
	// frame is the frame being built: 4 bytes for its length, then its payload.
	// Invariant: len(frame) <= 4 + snapshotFrameBytesMax.
	frame []byte
	crc   uint32
	n     int64
	err   error
}

func (e *encoder) write(p []byte) {
	for len(p) > 0 && e.err == nil {
		room := 4 + snapshotFrameBytesMax - len(e.frame)
		k := min(room, len(p))
		e.frame = append(e.frame, p[:k]...)
		p = p[k:]
		if len(e.frame) == 4+snapshotFrameBytesMax {
			e.flush()
		}
	}
}

// flush writes the pending frame, if it has a payload.
func (e *encoder) flush() {
	if len(e.frame) == 4 || e.err != nil {
		return
	}
	binary.BigEndian.PutUint32(e.frame, uint32(len(e.frame)-4))
	e.crc = crc32.Update(e.crc, crcTable, e.frame)
	e.frame = binary.BigEndian.AppendUint32(e.frame, e.crc)
	e.writeRaw(e.frame)
	e.frame = e.frame[:4]
}

func (e *encoder) writeEnd() {
	var end [8]byte
	e.crc = crc32.Update(e.crc, crcTable, end[:4])
	binary.BigEndian.PutUint32(end[4:], e.crc)
	e.writeRaw(end[:])
}

func (e *encoder) writeRaw(p []byte) {
	if e.err != nil {
		return
	}
	n, err := e.w.Write(p)
	e.n += int64(n)
	if err != nil {
		e.err = fmt.Errorf("mvcc: write snapshot: %w", err)
	}
}

// decoder reads the body out of verified frames.
type decoder struct {
	r io.Reader
	// payload is the current verified frame's payload; pos is how much of it has been read.
	payload []byte
	pos     int
	crc     uint32
	offset  int64 // stream offset of the next frame, for error messages.
	ended   bool
	err     error // the error ReadByte last returned.
	// compactChanges is set for a stream that carries every change made at the compaction
	// revision (format 2), so the history restarts there rather than after it.
	compactChanges bool
}

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

func (d *decoder) readFull(p []byte) error {
	if _, err := io.ReadFull(d.r, p); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return corruptf("truncated at offset %d: %w", d.offset, io.ErrUnexpectedEOF)
		}
		return fmt.Errorf("mvcc: read snapshot: %w", err)
	}
	return nil
}

// nextFrame reads and verifies the next frame; at the end marker it sets ended.
func (d *decoder) nextFrame() error {
	if d.ended {
		return corruptf("body continues past the end marker")
	}
	var hdr [4]byte
	if err := d.readFull(hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > snapshotFrameBytesMax {
		return corruptf("frame at offset %d has length %d > %d", d.offset, n, snapshotFrameBytesMax)
	}
	if cap(d.payload) < int(n)+4 {
		d.payload = make([]byte, 0, snapshotFrameBytesMax+4)
	}
	buf := d.payload[:n+4]
	if err := d.readFull(buf); err != nil {
		return err
	}
	crc := crc32.Update(d.crc, crcTable, hdr[:])
	crc = crc32.Update(crc, crcTable, buf[:n])
	if got := binary.BigEndian.Uint32(buf[n:]); got != crc {
		return corruptf("frame at offset %d: crc %#08x, want %#08x", d.offset, got, crc)
	}
	d.crc = crc
	d.offset += int64(n) + 8
	d.payload, d.pos = buf[:n], 0
	d.ended = n == 0
	return nil
}

func (d *decoder) ReadByte() (byte, error) {
	for d.pos == len(d.payload) {
		if err := d.nextFrame(); err != nil {
			d.err = err
			return 0, err
		}
	}
	b := d.payload[d.pos]
	d.pos++
	return b, nil
}

func (d *decoder) read(p []byte) error {
	for len(p) > 0 {
		if d.pos == len(d.payload) {
			if err := d.nextFrame(); err != nil {
				return err
			}
			continue
		}
		k := copy(p, d.payload[d.pos:])
		d.pos += k
		p = p[k:]
	}
	return nil
}

func (d *decoder) uvarint(what string) (uint64, error) {
	x, err := binary.ReadUvarint(d)
	return x, d.varintErr(what, err)
}

// varintErr turns an error of binary.ReadUvarint or ReadVarint on d into Restore's error: d's own
// read error as it is, anything else (an overlong varint) as corruption.
func (d *decoder) varintErr(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case d.err != nil:
		return d.err
	default:
		return corruptf("%s: %w", what, err)
	}
}

// int reads a uvarint that must be in [0, max].
func (d *decoder) int(what string, max int64) (int64, error) {
	x, err := d.uvarint(what)
	if err != nil {
		return 0, err
	}
	if x > uint64(max) {
		return 0, corruptf("%s %d out of range [0, %d]", what, x, max)
	}
	return int64(x), nil
}

func (d *decoder) bytes(what string, max int64) ([]byte, error) {
	n, err := d.int(what+" length", max)
	if err != nil || n == 0 {
		return nil, err
	}
	b := make([]byte, n)
	return b, d.read(b)
}

// Restore reads a stream written by WriteTo and returns a store with that logical state, fully
// compacted physically. It reads nothing past the stream's end marker. A damaged, truncated or
// inconsistent stream gives an error wrapping ErrCorrupt.
func Restore(r io.Reader) (*Store, error) {
	var hdr [12]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, corruptf("truncated header: %w", io.ErrUnexpectedEOF)
		}
		return nil, fmt.Errorf("mvcc: read snapshot: %w", err)
	}
	if string(hdr[:8]) != snapshotMagic {
		return nil, corruptf("bad magic %q", hdr[:8])
	}
	fv := binary.BigEndian.Uint32(hdr[8:])
	if fv != snapshotFormatVersion && fv != snapshotFormatVersionNoCompactTombstones {
		return nil, corruptf("unknown format version %d", fv)
	}
	d := &decoder{r: r, crc: crc32.Update(0, crcTable, hdr[:]), offset: int64(len(hdr)),
		compactChanges: fv == snapshotFormatVersion}
	s, err := d.body()
	if err != nil {
		return nil, err
	}
	if d.pos != len(d.payload) {
		return nil, corruptf("%d bytes after the body", len(d.payload)-d.pos)
	}
	if !d.ended {
		if err := d.nextFrame(); err != nil {
			return nil, err
		}
		if !d.ended {
			return nil, corruptf("frame after the body at offset %d", d.offset)
		}
	}
	return s, nil
}

// histRef is a change to rebuild the history from: key changed at rev.
type histRef struct {
	rev Revision
	key string
}

func (d *decoder) body() (*Store, error) {
	const revMax = 1<<63 - 1
	rev, err := d.int("rev", revMax)
	if err != nil {
		return nil, err
	}
	compactRev, err := d.int("compact rev", rev)
	if err != nil {
		return nil, err
	}
	compacted, err := d.ReadByte()
	if err != nil {
		return nil, err
	}
	if rev < 1 {
		return nil, corruptf("rev %d < 1", rev)
	}
	if compacted > 1 || (compacted == 0 && compactRev != 0) {
		return nil, corruptf("compacted flag %d with compact rev %d", compacted, compactRev)
	}
	s := New()
	s.st.rev, s.st.compactRev, s.st.compacted = rev, compactRev, compacted == 1
	var refs []histRef
	prevKey, first := "", true
	for {
		tag, err := d.ReadByte()
		if err != nil {
			return nil, err
		}
		if tag == recordEnd {
			break
		}
		if tag != recordKey {
			return nil, corruptf("unknown record tag %#x", tag)
		}
		kb, err := d.bytes("key", snapshotKeyBytesMax)
		if err != nil {
			return nil, err
		}
		key := string(kb)
		if !first && key <= prevKey {
			return nil, corruptf("key %q after %q", key, prevKey)
		}
		prevKey, first = key, false
		ki, err := d.versions(key, rev, compactRev, d.compactChanges && compacted == 1)
		if err != nil {
			return nil, err
		}
		ki.epoch = s.epoch
		s.bytes += keyOverheadBytes + int64(len(key))
		vers := ki.versions()
		for i := range vers {
			v := &vers[i]
			s.bytes += versionOverheadBytes + int64(v.val.n)
			if v.mod.Main > compactRev || (d.compactChanges && compacted == 1 && v.mod.Main == compactRev) {
				refs = append(refs, histRef{v.mod, key})
			}
		}
		if vers[len(vers)-1].tombstone() {
			s.st.dead.Load(key, ki)
		} else {
			s.st.live.Load(key, ki)
		}
	}
	if err := s.loadHistory(refs, d.compactChanges && compacted == 1); err != nil {
		return nil, err
	}
	return s, nil
}

// versions reads the versions of key and checks that they form a valid retained history.
func (d *decoder) versions(key string, rev, compactRev int64, compactTombstones bool) (*keyIndex, error) {
	n, err := d.int("version count", 1<<62)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, corruptf("key %q has no versions", key)
	}
	kd := &keyData{vers: make([]version, 0, min(n, restorePreallocVersionsMax))}
	for j := range n {
		var v version
		if v.mod.Main, err = d.int("main revision", rev); err != nil {
			return nil, err
		}
		if v.mod.Sub, err = d.int("sub revision", 1<<62); err != nil {
			return nil, err
		}
		if v.ver, err = d.int("version", 1<<62); err != nil {
			return nil, err
		}
		if v.create, err = d.int("create revision", rev); err != nil {
			return nil, err
		}
		if v.lease, err = binary.ReadVarint(d); err != nil {
			return nil, d.varintErr("lease", err)
		}
		size, err := d.int("value length", snapshotValueBytesMax)
		if err != nil {
			return nil, err
		}
		var dst []byte
		v.val, dst = kd.reserve(int(size))
		if err = d.read(dst); err != nil {
			return nil, err
		}
		var prev *version
		if j > 0 {
			prev = &kd.vers[j-1]
		}
		switch atCompact := compactTombstones && v.mod.Main == compactRev; {
		case atCompact && prev == nil && v.tombstone():
			// A tombstone made at the compaction revision, after the versions compaction dropped.
			if v.create != 0 || v.lease != 0 || v.val.n != 0 {
				err = fmt.Errorf("tombstone %d.%d carries data", v.mod.Main, v.mod.Sub)
			}
		case atCompact && prev != nil:
			// A later change of the key at the compaction revision itself.
			err = checkVersion(&v, prev, compactRev-1)
		default:
			err = checkVersion(&v, prev, compactRev)
		}
		if err != nil {
			return nil, corruptf("key %q: %w", key, err)
		}
		kd.vers = append(kd.vers, v)
	}
	return newKeyIndex(key, kd, 0), nil
}

// checkVersion checks v, which follows prev (nil for the first version of a key), in a retained
// history at compactRev.
func checkVersion(v, prev *version, compactRev int64) error {
	switch {
	case v.mod.Main < 1:
		return fmt.Errorf("revision %d.%d < 1", v.mod.Main, v.mod.Sub)
	case prev != nil && !prev.mod.less(v.mod):
		return fmt.Errorf("revision %d.%d after %d.%d", v.mod.Main, v.mod.Sub, prev.mod.Main, prev.mod.Sub)
	case prev != nil && v.mod.Main <= compactRev:
		return fmt.Errorf("second version %d.%d at or below compact revision %d", v.mod.Main, v.mod.Sub, compactRev)
	}
	if v.tombstone() {
		switch {
		case prev == nil || prev.tombstone():
			return fmt.Errorf("tombstone %d.%d does not follow a put", v.mod.Main, v.mod.Sub)
		case v.create != 0 || v.lease != 0 || v.val.n != 0:
			return fmt.Errorf("tombstone %d.%d carries data", v.mod.Main, v.mod.Sub)
		}
		return nil
	}
	creation := v.ver == 1 && v.create == v.mod.Main
	switch {
	case prev == nil && v.mod.Main > compactRev && !creation:
		return fmt.Errorf("first version %d.%d above compact revision %d is not a creation", v.mod.Main, v.mod.Sub, compactRev)
	case prev == nil && (v.ver < 1 || v.create < 1 || v.create > v.mod.Main || (v.ver == 1 && v.create != v.mod.Main)):
		return fmt.Errorf("version %d.%d: ver %d create %d inconsistent", v.mod.Main, v.mod.Sub, v.ver, v.create)
	case prev != nil && prev.tombstone() && !creation:
		return fmt.Errorf("put %d.%d after a tombstone is not a creation", v.mod.Main, v.mod.Sub)
	case prev != nil && !prev.tombstone() && (v.ver != prev.ver+1 || v.create != prev.create):
		return fmt.Errorf("put %d.%d: ver %d create %d after ver %d create %d", v.mod.Main, v.mod.Sub, v.ver, v.create, prev.ver, prev.create)
	}
	return nil
}

// loadHistory rebuilds the history from the changes above the compaction revision, and from
// those at it when fromCompactRev. Every revision in (compactRev, rev] (or [compactRev, rev])
// except the initial revision 1 must have changes numbered 0, 1, ... without gaps.
func (s *Store) loadHistory(refs []histRef, fromCompactRev bool) error {
	slices.SortFunc(refs, func(a, b histRef) int {
		if c := cmp.Compare(a.rev.Main, b.rev.Main); c != 0 {
			return c
		}
		return cmp.Compare(a.rev.Sub, b.rev.Sub)
	})
	want := max(s.st.compactRev+1, 2)
	if fromCompactRev {
		want = max(s.st.compactRev, 2)
	}
	s.st.hist = newHistory(want)
	for i := 0; i < len(refs); {
		main := refs[i].rev.Main
		if main != want {
			return corruptf("history jumps from revision %d to %d", want-1, main)
		}
		j := i
		for j < len(refs) && refs[j].rev.Main == main {
			if refs[j].rev.Sub != int64(j-i) {
				return corruptf("revision %d: change %d where %d was expected", main, refs[j].rev.Sub, j-i)
			}
			j++
		}
		rc := revChanges{key0: refs[i].key}
		if j-i > 1 {
			rc.rest = make([]string, j-i-1)
			for k := range rc.rest {
				rc.rest[k] = refs[i+1+k].key
			}
		}
		s.st.hist.add(main, rc)
		want, i = main+1, j
	}
	if want <= s.st.rev {
		return corruptf("history ends at revision %d, store revision is %d", want-1, s.st.rev)
	}
	return nil
}
