package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/diskio"
)

const (
	snapSuffix = ".snap"
	// snapMagic starts a snapshot file; snapEndMagic ends it.
	snapMagic    = "basaltsn"
	snapEndMagic = "basaltse"
	snapVersion  = 1
	// snapHeaderFixedBytes: magic, version, meta length (the meta and a CRC
	// follow).
	snapHeaderFixedBytes = 16
	// snapTrailerBytes: body length, body CRC, trailer CRC, end magic.
	snapTrailerBytes = 24
	// descriptorBytes is the size of Snapshot().Data.
	descriptorBytes = 40
	descriptorMagic = "basaltsd"
)

// Descriptor is what Snapshot().Data carries instead of the body: enough for
// a peer transport to name the snapshot and check the body it streams.
type Descriptor struct {
	Index, Term uint64
	// BodyBytes and BodyCRC describe the body OpenSnapshot returns
	// (CRC32C, Castagnoli).
	BodyBytes uint64
	BodyCRC   uint32
}

// Marshal encodes d as Snapshot().Data does.
func (d Descriptor) Marshal() []byte {
	b := make([]byte, 0, descriptorBytes)
	b = append(b, descriptorMagic...)
	b = binary.LittleEndian.AppendUint64(b, d.Index)
	b = binary.LittleEndian.AppendUint64(b, d.Term)
	b = binary.LittleEndian.AppendUint64(b, d.BodyBytes)
	b = binary.LittleEndian.AppendUint32(b, d.BodyCRC)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// ParseDescriptor decodes Snapshot().Data.
func ParseDescriptor(data []byte) (Descriptor, error) {
	if len(data) != descriptorBytes || string(data[:8]) != descriptorMagic ||
		binary.LittleEndian.Uint32(data[36:]) != crc32.Checksum(data[:36], castagnoli) {
		return Descriptor{}, fmt.Errorf("%w: snapshot descriptor of %d bytes", ErrCorrupt, len(data))
	}
	return Descriptor{
		Index:     binary.LittleEndian.Uint64(data[8:]),
		Term:      binary.LittleEndian.Uint64(data[16:]),
		BodyBytes: binary.LittleEndian.Uint64(data[24:]),
		BodyCRC:   binary.LittleEndian.Uint32(data[32:]),
	}, nil
}

// SnapshotWriter streams a snapshot body to a temp file. It touches only
// its own file and the snap directory, so it may run on another goroutine
// than the Log's owner; it is used by one goroutine at a time.
type SnapshotWriter struct {
	fsys       diskio.FS
	dir        string
	tmp, final string
	f          diskio.File
	// buf holds body bytes not yet written, which go at offset off.
	// Invariant: len(buf) <= snapshotBufferBytes.
	buf      []byte
	off      int64
	body     uint64
	crc      uint32
	finished bool
	err      error
}

// CreateSnapshot starts the snapshot file for meta. The caller writes the
// engine's state at meta's index through Write and then calls Commit (or
// Abort), possibly on another goroutine; then SnapshotSaved or
// ApplySnapshot on the Log's owner.
func (l *Log) CreateSnapshot(meta *raftpb.SnapshotMetadata) (*SnapshotWriter, error) {
	if l.err != nil {
		return nil, l.err
	}
	if meta.GetIndex() == 0 {
		return nil, fmt.Errorf("%w: snapshot at index 0", ErrSnapshotInvalid)
	}
	mb, err := proto.MarshalOptions{Deterministic: true}.Marshal(meta)
	if err != nil {
		return nil, err
	}
	if len(mb) > snapshotMetaBytesMax {
		return nil, fmt.Errorf("%w: snapshot metadata of %d bytes", ErrTooLarge, len(mb))
	}
	final := l.snapDir + "/" + snapshotName(meta.GetIndex(), meta.GetTerm())
	w := &SnapshotWriter{fsys: l.fsys, dir: l.snapDir, tmp: final + tmpSuffix, final: final}
	if w.f, err = l.fsys.Create(w.tmp); err != nil {
		return nil, err
	}
	hdr := make([]byte, 0, align8(snapHeaderFixedBytes+len(mb)+4))
	hdr = append(hdr, snapMagic...)
	hdr = binary.LittleEndian.AppendUint32(hdr, snapVersion)
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(mb)))
	hdr = append(hdr, mb...)
	hdr = binary.LittleEndian.AppendUint32(hdr, crc32.Checksum(hdr, castagnoli))
	for len(hdr)%8 != 0 {
		hdr = append(hdr, 0)
	}
	if _, err := w.f.WriteAt(hdr, 0); err != nil {
		w.f.Close()
		return nil, err
	}
	w.off = int64(len(hdr))
	return w, nil
}

// Write appends p to the body.
func (w *SnapshotWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.finished {
		return 0, ErrSnapshotFinished
	}
	w.crc = crc32.Update(w.crc, castagnoli, p)
	w.body += uint64(len(p))
	if len(w.buf)+len(p) > snapshotBufferBytes {
		if err := w.flush(); err != nil {
			return 0, err
		}
	}
	if len(p) >= snapshotBufferBytes {
		if err := w.writeAt(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	// The buffer grows with append, so a small snapshot never holds a
	// buffer of snapshotBufferBytes.
	w.buf = append(w.buf, p...)
	return len(p), nil
}

func (w *SnapshotWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	if err := w.writeAt(w.buf); err != nil {
		return err
	}
	w.buf = w.buf[:0]
	return nil
}

func (w *SnapshotWriter) writeAt(p []byte) error {
	if _, err := w.f.WriteAt(p, w.off); err != nil {
		w.err = err
		return err
	}
	w.off += int64(len(p))
	return nil
}

// Commit writes the checksum trailer, fsyncs the file, renames it into
// place and fsyncs the directory. Only after Commit returns nil does the
// snapshot survive a crash. Any error leaves the snapshot unusable; an fsync
// error is not retried.
func (w *SnapshotWriter) Commit() error {
	if w.err != nil {
		return w.err
	}
	if w.finished {
		return ErrSnapshotFinished
	}
	w.finished = true
	w.err = w.commit()
	return w.err
}

func (w *SnapshotWriter) commit() error {
	t := make([]byte, 0, snapTrailerBytes)
	t = binary.LittleEndian.AppendUint64(t, w.body)
	t = binary.LittleEndian.AppendUint32(t, w.crc)
	t = binary.LittleEndian.AppendUint32(t, crc32.Checksum(t, castagnoli))
	t = append(t, snapEndMagic...)
	w.buf = append(w.buf, t...)
	if err := w.flush(); err != nil {
		w.f.Close()
		return err
	}
	if err := w.f.Sync(); err != nil {
		w.f.Close()
		return fmt.Errorf("raftlog: fsync %s: %w", w.tmp, err)
	}
	if err := w.f.Close(); err != nil {
		return err
	}
	if err := crashPoint(FailpointSnapBeforeRename); err != nil {
		return err
	}
	if err := w.fsys.Rename(w.tmp, w.final); err != nil {
		return err
	}
	if err := crashPoint(FailpointSnapAfterRename); err != nil {
		return err
	}
	if err := w.fsys.SyncDir(w.dir); err != nil {
		return fmt.Errorf("raftlog: fsync dir %s: %w", w.dir, err)
	}
	return nil
}

// Abort discards the snapshot being written.
func (w *SnapshotWriter) Abort() error {
	if w.finished {
		return nil
	}
	w.finished = true
	cerr := w.f.Close()
	return errors.Join(cerr, w.fsys.Remove(w.tmp))
}

// snapFile is a snapshot file's header and trailer, checked.
type snapFile struct {
	name    string
	meta    *raftpb.SnapshotMetadata
	bodyOff int64
	desc    Descriptor
}

// readSnapHeader reads and checks the header and trailer of the snapshot
// file name (not its body).
func readSnapHeader(f diskio.File, name string) (snapFile, error) {
	corrupt := func(off int64, why string, args ...any) error {
		return fmt.Errorf("%w: %s offset %d: %s", ErrCorrupt, name, off, fmt.Sprintf(why, args...))
	}
	size, err := f.Size()
	if err != nil {
		return snapFile{}, err
	}
	if size < snapHeaderFixedBytes+4+snapTrailerBytes {
		return snapFile{}, corrupt(0, "%d bytes is too short for a snapshot", size)
	}
	fixed := make([]byte, snapHeaderFixedBytes)
	if _, err := f.ReadAt(fixed, 0); err != nil {
		return snapFile{}, err
	}
	if string(fixed[:8]) != snapMagic {
		return snapFile{}, corrupt(0, "bad magic")
	}
	if v := binary.LittleEndian.Uint32(fixed[8:]); v != snapVersion {
		return snapFile{}, corrupt(8, "format version %d, want %d", v, snapVersion)
	}
	mlen := int64(binary.LittleEndian.Uint32(fixed[12:]))
	if mlen > snapshotMetaBytesMax || snapHeaderFixedBytes+mlen+4+snapTrailerBytes > size {
		return snapFile{}, corrupt(12, "metadata length %d in a file of %d bytes", mlen, size)
	}
	hdr := make([]byte, snapHeaderFixedBytes+mlen+4)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return snapFile{}, err
	}
	n := len(hdr) - 4
	if binary.LittleEndian.Uint32(hdr[n:]) != crc32.Checksum(hdr[:n], castagnoli) {
		return snapFile{}, corrupt(int64(n), "header checksum mismatch")
	}
	meta := new(raftpb.SnapshotMetadata)
	if err := proto.Unmarshal(hdr[snapHeaderFixedBytes:n], meta); err != nil {
		return snapFile{}, corrupt(snapHeaderFixedBytes, "metadata: %v", err)
	}
	meta = raftpb.EnsureSnapshotMetadata(meta)
	bodyOff := int64(align8(len(hdr)))
	// The padding before the body is zero: no checksum covers it, and a flip anywhere must be
	// seen.
	pad := make([]byte, bodyOff-int64(len(hdr)))
	if _, err := f.ReadAt(pad, int64(len(hdr))); err != nil {
		return snapFile{}, err
	}
	for i, b := range pad {
		if b != 0 {
			return snapFile{}, corrupt(int64(len(hdr)+i), "padding byte %#x is not zero", b)
		}
	}
	t := make([]byte, snapTrailerBytes)
	toff := size - snapTrailerBytes
	if _, err := f.ReadAt(t, toff); err != nil {
		return snapFile{}, err
	}
	if string(t[16:]) != snapEndMagic || binary.LittleEndian.Uint32(t[12:]) != crc32.Checksum(t[:12], castagnoli) {
		return snapFile{}, corrupt(toff, "bad trailer")
	}
	body := binary.LittleEndian.Uint64(t)
	if bodyOff > toff || body != uint64(toff-bodyOff) {
		return snapFile{}, corrupt(toff, "trailer says %d body bytes, file holds %d", body, toff-bodyOff)
	}
	desc := Descriptor{Index: meta.GetIndex(), Term: meta.GetTerm(), BodyBytes: body, BodyCRC: binary.LittleEndian.Uint32(t[8:])}
	return snapFile{name: name, meta: meta, bodyOff: bodyOff, desc: desc}, nil
}

// verifySnapshot reads the whole snapshot file name and checks it.
func verifySnapshot(fsys diskio.FS, name string) (snapFile, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return snapFile{}, err
	}
	defer f.Close()
	sf, err := readSnapHeader(f, name)
	if err != nil {
		return snapFile{}, err
	}
	r := &bodyReader{f: f, name: name, off: sf.bodyOff, left: sf.desc.BodyBytes, want: sf.desc.BodyCRC}
	buf := make([]byte, min(snapshotBufferBytes, sf.desc.BodyBytes+1))
	for {
		_, err := r.Read(buf)
		if err == io.EOF {
			return sf, nil
		}
		if err != nil {
			return snapFile{}, err
		}
	}
}

// bodyReader reads a snapshot body and checks its CRC when it reaches the
// end.
type bodyReader struct {
	f    diskio.File
	name string
	off  int64
	left uint64
	crc  uint32
	want uint32
	err  error
}

func (r *bodyReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.left == 0 {
		if r.crc != r.want {
			r.err = fmt.Errorf("%w: %s offset %d: body checksum %08x, trailer says %08x", ErrCorrupt, r.name, r.off, r.crc, r.want)
			return 0, r.err
		}
		r.err = io.EOF
		return 0, io.EOF
	}
	if uint64(len(p)) > r.left {
		p = p[:r.left]
	}
	p = p[:min(len(p), snapshotBufferBytes)]
	n, err := r.f.ReadAt(p, r.off)
	r.crc = crc32.Update(r.crc, castagnoli, p[:n])
	r.off += int64(n)
	r.left -= uint64(n)
	if err != nil && !(err == io.EOF && n == len(p)) {
		r.err = err
		return n, err
	}
	return n, nil
}

// snapshotReadCloser is the body OpenSnapshot returns.
type snapshotReadCloser struct {
	*bodyReader
}

func (s snapshotReadCloser) Close() error { return s.f.Close() }

// ReceiveSnapshot writes the body of snap, a snapshot the leader sent in a
// MsgSnap (its Data is the leader's Descriptor), into this log as a
// committed snapshot file, checking the body against the Descriptor as it
// streams. A transport calls it, on the Log's owner goroutine, before it
// steps the message; the Ready that installs the snapshot then makes it the
// base with ApplySnapshot. A body that does not match fails with an error
// wrapping ErrCorrupt and leaves no file; the Log stays usable.
func (l *Log) ReceiveSnapshot(snap *raftpb.Snapshot, body io.Reader) error {
	meta := snap.GetMetadata()
	d, err := ParseDescriptor(snap.GetData())
	if err != nil {
		return err
	}
	if d.Index != meta.GetIndex() || d.Term != meta.GetTerm() {
		return fmt.Errorf("%w: descriptor of snapshot %d/%d in a message for %d/%d", ErrCorrupt, d.Index, d.Term, meta.GetIndex(), meta.GetTerm())
	}
	w, err := l.CreateSnapshot(meta)
	if err != nil {
		return err
	}
	n, err := io.Copy(w, io.LimitReader(body, int64(d.BodyBytes)))
	if err == nil && (uint64(n) != d.BodyBytes || w.crc != d.BodyCRC) {
		err = fmt.Errorf("%w: received snapshot %d/%d: %d body bytes of checksum %08x, descriptor says %d of %08x",
			ErrCorrupt, d.Index, d.Term, n, w.crc, d.BodyBytes, d.BodyCRC)
	}
	if err != nil {
		return errors.Join(err, w.Abort())
	}
	return w.Commit()
}

// CopySnapshot moves the snapshot snap from src, the log of the leader
// whose raft put snap in a MsgSnap, into dst, as a peer transport does
// between two machines. src's base must still be that snapshot, which
// holds when the copy is made as the message is sent; otherwise it fails
// with ErrSnapshotInvalid and the sender reports the snapshot failed.
func CopySnapshot(dst, src *Log, snap *raftpb.Snapshot) error {
	meta, body, err := src.OpenSnapshot()
	if err != nil {
		return err
	}
	defer body.Close()
	if meta.GetIndex() != snap.GetMetadata().GetIndex() || meta.GetTerm() != snap.GetMetadata().GetTerm() {
		return fmt.Errorf("%w: sending snapshot %d/%d from a log whose base is %d/%d", ErrSnapshotInvalid,
			snap.GetMetadata().GetIndex(), snap.GetMetadata().GetTerm(), meta.GetIndex(), meta.GetTerm())
	}
	return dst.ReceiveSnapshot(snap, body)
}
