package engine

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/engine/mvcc"
)

// A snapshot body is the whole engine state at an applied index. raftlog
// stores it between its own header and trailer (raftlog/doc.go); this is
// the body's format, version 1. Integers are little-endian.
//
//	 0          8         12          20         28
//	+----------+---------+-----------+----------+
//	|"basaltES"| version | index u64 | term u64 |           header
//	+----------+---------+-----------+----------+
//	| tag u32  | section payload ...             |  one per section,
//	+----------+---------------------------------+  tags ascending
//	| tag 0    | bytes u64 | crc u32 |                      end
//	+----------+-----------+---------+
//
//	tag  section      payload
//	1    conf state   n u32 (at most confStateBytesMax), then the raft
//	                  ConfState at index, protobuf (deterministic)
//	2    kv           the engine/mvcc stream of View.WriteTo: the store with
//	                  its history back to the compaction revision. The
//	                  stream is framed, checksummed and ends itself.
//	3    leases       n u64 (at most leasesMax), then n times ID i64, TTL
//	                  i64, checkpointed remaining TTL i64 (0 if none), by ID;
//	                  optional. The keys attached to each lease are the
//	                  kv section's live keys carrying its ID.
//	4    members      the members table (members.go, writeMembers);
//	                  optional
//	5    auth         enabled u8, revision u64, then n u32 (at most
//	                  authRecordsMax) users and m u32 roles, each as bytes
//	                  u32 (at most authRecordBytesMax) and its authpb
//	                  protobuf (deterministic), by name; optional, absent
//	                  for a new cluster's store
//	6    alarms       n u32 (at most alarmsMax), then n times member u64,
//	                  type u32, ordered by member then type; optional
//
// index and term name the raft entry the state is at; they must match the
// snapshot's metadata. In the end, bytes counts the body before the end's
// tag and crc is their CRC-32C (Castagnoli), so the body checks itself
// wherever it is carried. Version 1 requires sections 1 and 2. A reader
// refuses a section it does not know rather than dropping state it cannot
// read: a later version adds sections, and bumps the version only when an
// existing section changes its encoding.
const (
	snapBodyMagic   = "basaltES"
	snapBodyVersion = 1
	// snapBodyHeaderBytes: magic, version, index, term.
	snapBodyHeaderBytes = 28

	sectionEnd       = 0
	sectionConfState = 1
	sectionKV        = 2
	sectionLeases    = 3
	sectionMembers   = 4
	sectionAuth      = 5
	sectionAlarms    = 6
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors of snapshot bodies.
var (
	// ErrSnapshotCorrupt is wrapped by every error about a damaged, truncated
	// or inconsistent snapshot body.
	ErrSnapshotCorrupt = errors.New("engine: snapshot body is corrupt")
	// ErrSnapshotVersion is returned for a body written by a newer format
	// than this binary reads.
	ErrSnapshotVersion = errors.New("engine: snapshot body has an unknown format")
)

// SnapshotJob is a snapshot the host must write: the engine's state at
// Meta's index. Advance hands one out when SnapshotEntries entries have
// been applied since the last snapshot (and, for a large store, as many
// bytes as Config.SnapshotPacedBytes asks) and none is in flight.
//
// The host starts the file with raftlog's CreateSnapshot(Meta) on the
// goroutine that owns the Log, streams WriteSnapshot into it and commits it
// on any goroutine (the state is an immutable view, so the node keeps
// applying meanwhile), then, back on the Node's goroutine, calls
// Node.SnapshotDone and, if that says so, the Log's SnapshotSaved(Meta).
type SnapshotJob struct {
	// Meta is the snapshot's index (the applied index), the term of that
	// entry and the configuration at it. The host must not modify it.
	Meta *raftpb.SnapshotMetadata
	// view is the store at Meta's index.
	view *mvcc.View
	// alarms are the alarms raised at Meta's index.
	alarms alarms
	// leases are the leases at Meta's index, a copy-on-write copy.
	leases leaseRecords
	// members is the members table at Meta's index.
	members membersImage
	// auth is the auth store at Meta's index.
	auth *AuthState
}

// replicated is the state a snapshot carries besides the configuration:
// everything apply changes.
type replicated struct {
	store   *mvcc.Store
	alarms  alarms
	members members
	// leases is nil until loadSnapshot builds it from leaseRecords.
	leases       *lessor
	leaseRecords []leaseRecord
	auth         *AuthState
}

// WriteSnapshot writes job's body to w. It only reads the job, so it may
// run on any goroutine, concurrently with the Node.
func WriteSnapshot(w io.Writer, job *SnapshotJob) error {
	cw := &crcWriter{w: w}
	hdr := make([]byte, 0, snapBodyHeaderBytes)
	hdr = append(hdr, snapBodyMagic...)
	hdr = binary.LittleEndian.AppendUint32(hdr, snapBodyVersion)
	hdr = binary.LittleEndian.AppendUint64(hdr, job.Meta.GetIndex())
	hdr = binary.LittleEndian.AppendUint64(hdr, job.Meta.GetTerm())
	cs, err := proto.MarshalOptions{Deterministic: true}.Marshal(raftpb.EnsureConfState(job.Meta.GetConfState()))
	if err != nil {
		return fmt.Errorf("engine: encoding the conf state: %w", err)
	}
	if len(cs) > confStateBytesMax {
		return fmt.Errorf("engine: conf state of %d bytes exceeds %d", len(cs), confStateBytesMax)
	}
	hdr = binary.LittleEndian.AppendUint32(hdr, sectionConfState)
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(cs)))
	hdr = append(hdr, cs...)
	hdr = binary.LittleEndian.AppendUint32(hdr, sectionKV)
	if _, err := cw.Write(hdr); err != nil {
		return err
	}
	if _, err := job.view.WriteTo(cw); err != nil {
		return err
	}
	if job.leases != nil && job.leases.Len() > 0 {
		if _, err := cw.Write(binary.LittleEndian.AppendUint32(nil, sectionLeases)); err != nil {
			return err
		}
		if err := writeLeases(cw, job.leases); err != nil {
			return err
		}
	}
	if len(job.members.list) > 0 || len(job.members.removed) > 0 {
		if _, err := cw.Write(binary.LittleEndian.AppendUint32(nil, sectionMembers)); err != nil {
			return err
		}
		if err := writeMembers(cw, job.members); err != nil {
			return err
		}
	}
	if job.auth != nil && !job.auth.isDefault() {
		if _, err := cw.Write(binary.LittleEndian.AppendUint32(nil, sectionAuth)); err != nil {
			return err
		}
		if err := writeAuth(cw, job.auth); err != nil {
			return err
		}
	}
	if len(job.alarms) > 0 {
		if _, err := cw.Write(binary.LittleEndian.AppendUint32(nil, sectionAlarms)); err != nil {
			return err
		}
		if err := writeAlarms(cw, job.alarms); err != nil {
			return err
		}
	}
	end := binary.LittleEndian.AppendUint32(nil, sectionEnd)
	end = binary.LittleEndian.AppendUint64(end, cw.n)
	end = binary.LittleEndian.AppendUint32(end, cw.crc)
	_, err = cw.Write(end)
	return err
}

// crcWriter counts and checksums what passes through it.
type crcWriter struct {
	w   io.Writer
	n   uint64
	crc uint32
}

func (c *crcWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += uint64(n)
	c.crc = crc32.Update(c.crc, castagnoli, p[:n])
	if err != nil {
		return n, fmt.Errorf("engine: writing the snapshot: %w", err)
	}
	return n, nil
}

// crcReader counts and checksums what is read through it.
type crcReader struct {
	r   io.Reader
	n   uint64
	crc uint32
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(n)
	c.crc = crc32.Update(c.crc, castagnoli, p[:n])
	return n, err
}

func snapCorrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrSnapshotCorrupt, fmt.Sprintf(format, args...))
}

// readFull reads len(p) bytes of the body; running out is corruption.
func readFull(r io.Reader, p []byte, what string) error {
	if _, err := io.ReadFull(r, p); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return snapCorrupt("truncated in the %s", what)
		}
		return fmt.Errorf("engine: reading the snapshot's %s: %w", what, err)
	}
	return nil
}

// readSnapshot reads a whole body written by WriteSnapshot for meta and
// returns the state it holds. It reads body to its end, so that a
// checksum the container verifies at the end (raftlog's) is checked too;
// any error means nothing of the body may be used.
func readSnapshot(body io.Reader, meta *raftpb.SnapshotMetadata) (*replicated, error) {
	br := bufio.NewReaderSize(body, snapshotReadBufferBytes)
	r := &crcReader{r: br}
	var hdr [snapBodyHeaderBytes]byte
	if err := readFull(r, hdr[:], "header"); err != nil {
		return nil, err
	}
	if string(hdr[:8]) != snapBodyMagic {
		return nil, snapCorrupt("bad magic %q", hdr[:8])
	}
	if v := binary.LittleEndian.Uint32(hdr[8:]); v != snapBodyVersion {
		return nil, fmt.Errorf("%w: version %d, this binary reads %d", ErrSnapshotVersion, v, snapBodyVersion)
	}
	index, term := binary.LittleEndian.Uint64(hdr[12:]), binary.LittleEndian.Uint64(hdr[20:])
	if index != meta.GetIndex() || term != meta.GetTerm() {
		return nil, snapCorrupt("body of %d/%d in the snapshot of %d/%d", index, term, meta.GetIndex(), meta.GetTerm())
	}
	var store *mvcc.Store
	var as alarms
	var leases []leaseRecord
	ms := newMembers()
	auth := newAuthState()
	var cs *raftpb.ConfState
	last := uint32(sectionEnd)
	for {
		n, crc := r.n, r.crc
		var b [4]byte
		if err := readFull(r, b[:], "section tag"); err != nil {
			return nil, err
		}
		tag := binary.LittleEndian.Uint32(b[:])
		if tag == sectionEnd {
			if err := readEnd(r, n, crc); err != nil {
				return nil, err
			}
			break
		}
		if tag <= last {
			return nil, snapCorrupt("section %d after section %d", tag, last)
		}
		last = tag
		switch tag {
		case sectionConfState:
			var err error
			if cs, err = readConfState(r); err != nil {
				return nil, err
			}
		case sectionKV:
			var err error
			if store, err = mvcc.Restore(r); err != nil {
				return nil, fmt.Errorf("engine: reading the snapshot's kv section: %w", err)
			}
		case sectionLeases:
			var err error
			if leases, err = readLeases(r); err != nil {
				return nil, err
			}
		case sectionMembers:
			var err error
			if ms, err = readMembers(r); err != nil {
				return nil, err
			}
		case sectionAuth:
			var err error
			if auth, err = readAuth(r); err != nil {
				return nil, err
			}
		case sectionAlarms:
			var err error
			if as, err = readAlarms(r); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%w: section %d", ErrSnapshotVersion, tag)
		}
	}
	if cs == nil || store == nil {
		return nil, snapCorrupt("a section is missing (conf state: %t, kv: %t)", cs != nil, store != nil)
	}
	if !confStateEqual(cs, meta.GetConfState()) {
		return nil, snapCorrupt("conf state %v in the body, %v in the metadata", cs, meta.GetConfState())
	}
	// Reading on to the end lets the container check its own checksum.
	switch _, err := br.ReadByte(); {
	case err == nil:
		return nil, snapCorrupt("bytes after the end")
	case !errors.Is(err, io.EOF):
		return nil, fmt.Errorf("engine: reading the snapshot's end: %w", err)
	}
	return &replicated{store: store, alarms: as, members: ms, leaseRecords: leases, auth: auth}, nil
}

// readEnd checks the end section against the n bytes of CRC crc read
// before its tag.
func readEnd(r io.Reader, n uint64, crc uint32) error {
	var b [12]byte
	if err := readFull(r, b[:], "end"); err != nil {
		return err
	}
	if got := binary.LittleEndian.Uint64(b[:]); got != n {
		return snapCorrupt("end says %d bytes, read %d", got, n)
	}
	if got := binary.LittleEndian.Uint32(b[8:]); got != crc {
		return snapCorrupt("checksum %08x, end says %08x", crc, got)
	}
	return nil
}

func readConfState(r io.Reader) (*raftpb.ConfState, error) {
	var b [4]byte
	if err := readFull(r, b[:], "conf state"); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(b[:])
	if n > confStateBytesMax {
		return nil, snapCorrupt("conf state of %d bytes", n)
	}
	p := make([]byte, n)
	if err := readFull(r, p, "conf state"); err != nil {
		return nil, err
	}
	cs := new(raftpb.ConfState)
	if err := proto.Unmarshal(p, cs); err != nil {
		return nil, snapCorrupt("conf state: %v", err)
	}
	return cs, nil
}

// confStateEqual compares two configurations by content; proto.Equal
// would also compare which optional fields are present.
func confStateEqual(a, b *raftpb.ConfState) bool {
	same := func(x, y []uint64) bool {
		x, y = slices.Clone(x), slices.Clone(y)
		slices.Sort(x)
		slices.Sort(y)
		return slices.Equal(x, y)
	}
	return same(a.GetVoters(), b.GetVoters()) && same(a.GetLearners(), b.GetLearners()) &&
		same(a.GetVotersOutgoing(), b.GetVotersOutgoing()) && same(a.GetLearnersNext(), b.GetLearnersNext()) &&
		a.GetAutoLeave() == b.GetAutoLeave()
}

func cloneConfState(cs *raftpb.ConfState) *raftpb.ConfState {
	return &raftpb.ConfState{
		Voters:         slices.Clone(cs.GetVoters()),
		Learners:       slices.Clone(cs.GetLearners()),
		VotersOutgoing: slices.Clone(cs.GetVotersOutgoing()),
		LearnersNext:   slices.Clone(cs.GetLearnersNext()),
		AutoLeave:      new(cs.GetAutoLeave()),
	}
}

// loadSnapshot reads the body of the log's base snapshot, which must be
// the one meta names.
func (n *Node) loadSnapshot(meta *raftpb.SnapshotMetadata) (*replicated, error) {
	got, body, err := n.cfg.Log.OpenSnapshot()
	if err != nil {
		return nil, fmt.Errorf("engine: opening the snapshot at index %d: %w", meta.GetIndex(), err)
	}
	defer body.Close()
	if got.GetIndex() != meta.GetIndex() || got.GetTerm() != meta.GetTerm() {
		return nil, fmt.Errorf("engine: the log's snapshot is %d/%d, want %d/%d", got.GetIndex(), got.GetTerm(), meta.GetIndex(), meta.GetTerm())
	}
	st, err := readSnapshot(body, meta)
	if err == nil {
		st.leases = newLessor(&n.cfg)
		err = st.leases.restore(st.leaseRecords, st.store)
	}
	if err != nil {
		return nil, fmt.Errorf("engine: restoring the snapshot at index %d: %w", meta.GetIndex(), err)
	}
	return st, nil
}

// install replaces the state with a snapshot received from the leader,
// which the host has made the log's base (ApplySnapshot) before Advance.
func (n *Node) install(snap *raftpb.Snapshot) error {
	meta := snap.GetMetadata()
	base, err := n.cfg.Log.Snapshot()
	if err != nil {
		return fmt.Errorf("engine: reading the log's snapshot: %w", err)
	}
	if bm := base.GetMetadata(); bm.GetIndex() != meta.GetIndex() || bm.GetTerm() != meta.GetTerm() {
		panic(fmt.Sprintf("engine: member %x advanced past snapshot %d/%d that the log does not hold (its base is %d/%d): the host must ApplySnapshot before Advance",
			n.cfg.ID, meta.GetIndex(), meta.GetTerm(), bm.GetIndex(), bm.GetTerm()))
	}
	st, err := n.loadSnapshot(meta)
	if err != nil {
		return err
	}
	n.log.Info("installed snapshot from the leader", zap.Uint64("index", meta.GetIndex()), zap.Uint64("term", meta.GetTerm()),
		zap.Uint64("applied-before", n.applied), zap.Int64("revision", st.store.Rev()))
	n.store, n.alarms, n.leases, n.members, n.auth = st.store, st.alarms, st.leases, st.members, st.auth
	n.applied, n.appliedTerm = meta.GetIndex(), meta.GetTerm()
	n.confState = cloneConfState(meta.GetConfState())
	n.snap.index = meta.GetIndex()
	n.snap.due = meta.GetIndex() + n.snap.entries
	n.snap.logBytes, n.snap.storeBytes = 0, n.store.Bytes()
	n.viewStale = true
	return nil
}

// maybeSnapshot hands out a snapshot job when one is due.
func (n *Node) maybeSnapshot() *SnapshotJob {
	if n.snap.inflight != nil || n.applied < n.snap.due || n.applied == 0 {
		return nil
	}
	if paced := n.cfg.SnapshotPacedBytes; paced > 0 && n.snap.logBytes < n.snap.storeBytes-paced {
		return nil
	}
	job := &SnapshotJob{
		Meta: &raftpb.SnapshotMetadata{
			Index:     new(n.applied),
			Term:      new(n.appliedTerm),
			ConfState: cloneConfState(n.confState),
		},
		view:    n.store.View(),
		alarms:  n.alarms,
		leases:  n.leases.byTTL.Copy(),
		members: n.membersImage(),
		auth:    n.auth,
	}
	n.snap.inflight = job
	n.snap.logBytes, n.snap.storeBytes = 0, n.store.Bytes()
	return job
}

// SnapshotDone tells the node that job, handed out by Advance, is
// finished: err is nil once its body is committed (the SnapshotWriter's
// Commit returned nil), else why it failed. It reports whether the host
// must now make the snapshot the log's base with SnapshotSaved(job.Meta):
// not when it failed, nor when a snapshot installed from the leader has
// overtaken it. After a failure the next job is due SnapshotEntries
// entries later.
func (n *Node) SnapshotDone(job *SnapshotJob, err error) (save bool) {
	assert(job != nil && job == n.snap.inflight, "engine: member %x: SnapshotDone for a job that is not in flight", n.cfg.ID)
	n.snap.inflight = nil
	index := job.Meta.GetIndex()
	if err != nil {
		n.log.Warn("writing a snapshot failed", zap.Uint64("index", index), zap.Error(err))
		n.snap.due = n.applied + n.snap.entries
		return false
	}
	if index <= n.snap.index {
		n.log.Info("snapshot overtaken by one from the leader", zap.Uint64("index", index), zap.Uint64("installed", n.snap.index))
		return false
	}
	n.snap.index = index
	n.snap.due = index + n.snap.entries
	return true
}

// requestSnapshot makes a snapshot of the current state due now; the job
// comes out of a later Advance, unless one is in flight.
func (n *Node) requestSnapshot() {
	if n.applied > n.snap.index {
		n.snap.due = min(n.snap.due, n.applied)
	}
}

// ReportSnapshot tells a leader whether the snapshot it sent to member to
// (a MsgSnap in Ready.Messages) was delivered. A host that fails to deliver
// one must report it: raft sends that follower nothing else until then.
func (n *Node) ReportSnapshot(to uint64, delivered bool) {
	status := raft.SnapshotFinish
	if !delivered {
		status = raft.SnapshotFailure
	}
	n.raw.ReportSnapshot(to, status)
}
