package raftlog

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/basaltdb/basalt/diskio"
)

// recordType is the type byte of a record header. Zero is not a type: a
// header of zeros is space that was never written.
type recordType uint8

const (
	// recSegment opens a segment whose log continues the previous one,
	// truncated to firstIndex-1.
	recSegment recordType = 1
	// recSnapshot opens a segment made by ApplySnapshot: the snapshot
	// marker. The log restarts after the snapshot at firstIndex-1.
	recSnapshot recordType = 2
	// recHardState is raft's HardState (term, vote, commit).
	recHardState recordType = 3
	// recEntry is one raft entry. An entry at an index the log already holds
	// replaces it and every entry after it.
	recEntry recordType = 4
	// recSeal closes a segment that has a successor.
	recSeal recordType = 5
	// recSync is a sync marker: written after a sync (at Open, once
	// recovery made the log durable, and at Close), it carries no payload;
	// its synced field vouches for every byte before it.
	recSync recordType = 6
)

func (t recordType) String() string {
	switch t {
	case recSegment:
		return "segment"
	case recSnapshot:
		return "snapshot"
	case recHardState:
		return "hardstate"
	case recEntry:
		return "entry"
	case recSeal:
		return "seal"
	case recSync:
		return "sync"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

const (
	recordHeaderBytes         = 16
	segmentHeaderPayloadBytes = 64
	hardStatePayloadBytes     = 24
	entryPayloadFixedBytes    = 17
	// segmentHeaderRecordBytes is where the first batch of a segment starts.
	segmentHeaderRecordBytes = recordHeaderBytes + segmentHeaderPayloadBytes
	// walMagic starts a segment header payload.
	walMagic = "basaltwl"
	// walVersion is the format version this package writes and reads.
	walVersion = 1
)

// castagnoli is CRC32C, computed in hardware on amd64 and arm64.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func align8(n int) int { return (n + 7) &^ 7 }

// recordBytes is the footprint of a record with a payload of n bytes.
func recordBytes(n int) int { return recordHeaderBytes + align8(n) }

// recordCRC is the checksum of the record rec (header and padded payload)
// that starts at offset off of segment seq. Seeding it with the segment and
// the offset makes a record that is valid only where it was written: a
// misdirected write, a block of another file or a stale copy fails it. The
// seed goes through the caller's buffer: crc32 would move a local one to
// the heap.
func recordCRC(seed *[16]byte, seq uint64, off int64, rec []byte) uint32 {
	binary.LittleEndian.PutUint64(seed[0:], seq)
	binary.LittleEndian.PutUint64(seed[8:], uint64(off))
	crc := crc32.Update(0, castagnoli, seed[:])
	return crc32.Update(crc, castagnoli, rec[4:])
}

// beginRecord appends the room for a record header to buf and returns where
// the record starts; the payload is appended next, then finishRecord.
func beginRecord(buf []byte) ([]byte, int) {
	start := len(buf)
	buf = binary.LittleEndian.AppendUint64(buf, 0)
	buf = binary.LittleEndian.AppendUint64(buf, 0)
	return buf, start
}

// finishRecord pads the record that starts at buf[start:] and fills its
// header for file offset off of segment seq.
func finishRecord(seed *[16]byte, buf []byte, start int, seq uint64, off int64, typ recordType, synced uint32) []byte {
	n := len(buf) - start - recordHeaderBytes
	if n < 0 || n > payloadBytesMax {
		panicf("record payload of %d bytes", n)
	}
	if int64(synced) > off {
		panicf("record at %d claims synced %d past itself", off, synced)
	}
	for range align8(n) - n {
		buf = append(buf, 0)
	}
	rec := buf[start:]
	binary.LittleEndian.PutUint32(rec[4:], uint32(n))
	rec[8] = byte(typ)
	binary.LittleEndian.PutUint32(rec[12:], synced)
	binary.LittleEndian.PutUint32(rec[0:], recordCRC(seed, seq, off, rec))
	return buf
}

// recordStatus is what a reader finds at an offset.
type recordStatus uint8

const (
	// recordValid: a record with a matching checksum.
	recordValid recordStatus = iota
	// recordZero: a header of zeros, never-written (preallocated) space.
	recordZero
	// recordDamaged: anything else: a torn or rotten record, or garbage.
	recordDamaged
)

func (s recordStatus) String() string {
	return [...]string{"valid", "zero", "damaged"}[s]
}

// record is one parsed record. Payload aliases the reader's buffer.
type record struct {
	typ     recordType
	synced  uint32
	payload []byte
	// size is the record's footprint: header, payload and padding.
	size int
}

// fileReader reads a file through a buffer, in chunks of at most
// readChunkBytesMax unless one record needs more.
type fileReader struct {
	f    diskio.File
	size int64
	// buf holds the file's bytes [bufOff, bufOff+len(buf)).
	buf    []byte
	bufOff int64
	seed   [16]byte
	// skipCRC accepts records whatever their CRC (Options.SkipCRC).
	skipCRC bool
}

// bytes returns the file's bytes [off, off+n) clipped to its end. The
// slice is valid until the next call.
func (r *fileReader) bytes(off int64, n int) ([]byte, error) {
	end := min(off+int64(n), r.size)
	if off >= end {
		return nil, nil
	}
	if off >= r.bufOff && end <= r.bufOff+int64(len(r.buf)) {
		return r.buf[off-r.bufOff : end-r.bufOff], nil
	}
	want := min(max(int64(n), readChunkBytesMax), r.size-off)
	if int64(cap(r.buf)) < want {
		r.buf = make([]byte, want)
	}
	r.buf = r.buf[:want]
	if _, err := r.f.ReadAt(r.buf, off); err != nil {
		r.buf = r.buf[:0]
		return nil, err
	}
	r.bufOff = off
	return r.buf[:end-off], nil
}

// readRecord parses the record at off of segment seq.
func (r *fileReader) readRecord(seq uint64, off int64) (record, recordStatus, error) {
	h, err := r.bytes(off, recordHeaderBytes)
	if err != nil {
		return record{}, recordDamaged, err
	}
	if allZero(h) {
		return record{}, recordZero, nil
	}
	if len(h) < recordHeaderBytes {
		return record{}, recordDamaged, nil
	}
	n := binary.LittleEndian.Uint32(h[4:])
	typ := recordType(h[8])
	if n > payloadBytesMax || typ < recSegment || typ > recSync || h[9]|h[10]|h[11] != 0 {
		return record{}, recordDamaged, nil
	}
	size := recordBytes(int(n))
	b, err := r.bytes(off, size)
	if err != nil {
		return record{}, recordDamaged, err
	}
	if len(b) < size || (!r.skipCRC && binary.LittleEndian.Uint32(b) != recordCRC(&r.seed, seq, off, b)) {
		return record{}, recordDamaged, nil
	}
	rec := record{
		typ:     typ,
		synced:  binary.LittleEndian.Uint32(b[12:]),
		payload: b[recordHeaderBytes : recordHeaderBytes+int(n)],
		size:    size,
	}
	return rec, recordValid, nil
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// hardState is raft's HardState as plain values.
type hardState struct {
	term, vote, commit uint64
}

func hardStateOf(hs *raftpb.HardState) hardState {
	return hardState{term: hs.GetTerm(), vote: hs.GetVote(), commit: hs.GetCommit()}
}

func (h hardState) proto() *raftpb.HardState {
	return &raftpb.HardState{Term: new(h.term), Vote: new(h.vote), Commit: new(h.commit)}
}

func (h hardState) isEmpty() bool { return h == hardState{} }

func appendHardState(buf []byte, h hardState) []byte {
	buf = binary.LittleEndian.AppendUint64(buf, h.term)
	buf = binary.LittleEndian.AppendUint64(buf, h.vote)
	return binary.LittleEndian.AppendUint64(buf, h.commit)
}

func decodeHardState(p []byte) (hardState, bool) {
	if len(p) != hardStatePayloadBytes {
		return hardState{}, false
	}
	return hardState{
		term:   binary.LittleEndian.Uint64(p[0:]),
		vote:   binary.LittleEndian.Uint64(p[8:]),
		commit: binary.LittleEndian.Uint64(p[16:]),
	}, true
}

// segmentHeader is the payload of the recSegment or recSnapshot record that
// opens every segment. It makes the segment self-describing, so that older
// segments can be removed: it carries the hard state at creation and the
// term of the entry before firstIndex.
type segmentHeader struct {
	seq        uint64
	firstIndex uint64
	// prevTerm is the term of entry firstIndex-1 (the snapshot's term for a
	// recSnapshot header).
	prevTerm uint64
	hs       hardState
}

func appendSegmentHeader(buf []byte, h segmentHeader) []byte {
	buf = append(buf, walMagic...)
	buf = binary.LittleEndian.AppendUint32(buf, walVersion)
	buf = binary.LittleEndian.AppendUint32(buf, 0)
	buf = binary.LittleEndian.AppendUint64(buf, h.seq)
	buf = binary.LittleEndian.AppendUint64(buf, h.firstIndex)
	buf = binary.LittleEndian.AppendUint64(buf, h.prevTerm)
	return appendHardState(buf, h.hs)
}

func decodeSegmentHeader(p []byte) (segmentHeader, error) {
	if len(p) != segmentHeaderPayloadBytes || string(p[:8]) != walMagic {
		return segmentHeader{}, fmt.Errorf("not a segment header")
	}
	if v := binary.LittleEndian.Uint32(p[8:]); v != walVersion {
		return segmentHeader{}, fmt.Errorf("format version %d, want %d", v, walVersion)
	}
	hs, _ := decodeHardState(p[40:])
	h := segmentHeader{
		seq:        binary.LittleEndian.Uint64(p[16:]),
		firstIndex: binary.LittleEndian.Uint64(p[24:]),
		prevTerm:   binary.LittleEndian.Uint64(p[32:]),
		hs:         hs,
	}
	if h.firstIndex == 0 {
		return segmentHeader{}, fmt.Errorf("first index 0")
	}
	return h, nil
}

// appendEntry appends an entry payload: index, term, type, data.
func appendEntry(buf []byte, e *raftpb.Entry) []byte {
	buf = binary.LittleEndian.AppendUint64(buf, e.GetIndex())
	buf = binary.LittleEndian.AppendUint64(buf, e.GetTerm())
	buf = append(buf, byte(e.GetType()))
	return append(buf, e.GetData()...)
}

// entryHead decodes the fixed part of an entry payload.
func entryHead(p []byte) (index, term uint64, typ raftpb.EntryType, ok bool) {
	if len(p) < entryPayloadFixedBytes {
		return 0, 0, 0, false
	}
	typ = raftpb.EntryType(p[16])
	if _, known := raftpb.EntryType_name[int32(typ)]; !known {
		return 0, 0, 0, false
	}
	return binary.LittleEndian.Uint64(p), binary.LittleEndian.Uint64(p[8:]), typ, true
}

// entrySize is proto.Size(e), which is what raft's size limits count,
// computed without reflection: each set field costs a tag byte and its
// varint, Data a tag byte, its length and its bytes.
func entrySize(e *raftpb.Entry) uint64 {
	n := 0
	if e.Term != nil {
		n += 1 + varintBytes(*e.Term)
	}
	if e.Index != nil {
		n += 1 + varintBytes(*e.Index)
	}
	if e.Type != nil {
		n += 1 + varintBytes(uint64(*e.Type))
	}
	if e.Data != nil {
		n += 1 + varintBytes(uint64(len(e.Data))) + len(e.Data)
	}
	return uint64(n)
}

func varintBytes(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
