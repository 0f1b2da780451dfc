package engine

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/diskio"
	"github.com/basaltdb/basalt/engine/mvcc"
	"github.com/basaltdb/basalt/raftlog"
)

// harness drives one member on the simulated disk the way the server's
// loop does: submit, then persist, send and advance until idle; snapshot
// jobs are written at once, or held until finish-snapshot.
type harness struct {
	t    fataler
	disk *diskio.Sim
	log  *raftlog.Log
	node *Node
	// answers collects responses by ID as Advance hands them out.
	answers map[ID]Response
	// view is the newest published read view.
	view *mvcc.View

	// snapshotEntries, snapshotsRetained and quotaBytes configure the
	// member and its log.
	snapshotEntries   uint64
	snapshotsRetained int
	quotaBytes        int64
	pacedBytes        int64
	// hold keeps snapshot jobs in held instead of writing them.
	hold bool
	held *SnapshotJob
	// openedAt is the index of the snapshot the log opened with.
	openedAt uint64
	// events are what happened besides answers (snapshots), printed after
	// the command's own output.
	events []string
}

// fataler is what the harness needs of a test: a *testing.T or a
// *rapid.T.
type fataler interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

const harnessMemberID = 1

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, disk: diskio.NewSim()}
	h.start()
	return h
}

func (h *harness) start() {
	h.t.Helper()
	log, err := raftlog.Open(h.disk, "member", raftlog.Options{SegmentBytes: 1 << 20, SnapshotsRetained: h.snapshotsRetained})
	if err != nil {
		h.t.Fatal(err)
	}
	snap, err := log.Snapshot()
	if err != nil {
		h.t.Fatal(err)
	}
	h.openedAt = snap.GetMetadata().GetIndex()
	node, err := NewNode(Config{
		ID:                  harnessMemberID,
		Log:                 log,
		Bootstrap:           []Peer{{ID: harnessMemberID}},
		ElectionTicks:       10,
		HeartbeatTicks:      1,
		RequestTimeoutTicks: 100,
		RequestBytesMax:     1 << 20,
		Rand:                rand.New(rand.NewPCG(1, 2)),
		SnapshotEntries:     h.snapshotEntries,
		QuotaBytes:          h.quotaBytes,
		SnapshotPacedBytes:  h.pacedBytes,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.log, h.node, h.answers, h.held = log, node, map[ID]Response{}, nil
	h.stabilize()
	if st := node.Status(); st.Leader != harnessMemberID {
		h.t.Fatalf("a sole member did not elect itself: %+v", st)
	}
}

// stabilize runs Ready/Advance until the node has nothing left to do.
func (h *harness) stabilize() {
	h.t.Helper()
	for h.node.HasReady() {
		rd := h.node.Ready()
		if err := h.log.Save(rd.HardState, rd.Entries, rd.MustSync); err != nil {
			h.t.Fatal(err)
		}
		out := h.node.Advance(rd)
		if out.Err != nil {
			h.t.Fatal(out.Err)
		}
		if out.View != nil {
			h.view = out.View
		}
		for _, r := range out.Responses {
			h.answers[r.ID] = r
		}
		for _, tk := range out.Tokens {
			h.event("assigned token %s to %s at auth revision %d", tk.Token, tk.User, tk.Revision)
		}
		if out.Snapshot != nil {
			h.event("snapshot due at index %d term %d (revision %d)", out.Snapshot.Meta.GetIndex(), out.Snapshot.Meta.GetTerm(), out.Snapshot.view.Rev())
			if h.hold {
				h.held = out.Snapshot
			} else {
				h.finishSnapshot(out.Snapshot, nil)
			}
		}
	}
}

// finishSnapshot writes job as a host does, or reports it failed with
// fail, and makes it the log's base if the node says so.
func (h *harness) finishSnapshot(job *SnapshotJob, fail error) {
	h.t.Helper()
	if fail == nil {
		w, err := h.log.CreateSnapshot(job.Meta)
		if err != nil {
			h.t.Fatal(err)
		}
		if err := WriteSnapshot(w, job); err != nil {
			h.t.Fatal(err)
		}
		if err := w.Commit(); err != nil {
			h.t.Fatal(err)
		}
	}
	if !h.node.SnapshotDone(job, fail) {
		h.event("snapshot at index %d not saved", job.Meta.GetIndex())
		return
	}
	if err := h.log.SnapshotSaved(job.Meta); err != nil {
		h.t.Fatal(err)
	}
	first, _ := h.log.FirstIndex()
	h.event("snapshot saved at index %d; log starts at %d", job.Meta.GetIndex(), first)
}

func (h *harness) event(format string, args ...any) {
	h.events = append(h.events, fmt.Sprintf(format, args...))
}

// do submits r and returns its answer.
func (h *harness) do(r Request) Response {
	h.t.Helper()
	id, err := h.node.Submit(r)
	if err != nil {
		return Response{Err: err}
	}
	h.stabilize()
	resp, ok := h.answers[id]
	if !ok {
		h.t.Fatalf("request %d was not answered", id)
	}
	delete(h.answers, id)
	return resp
}

// TestEngine runs the golden files in testdata/engine: a member applying
// KV requests, with their revisions, taking snapshots, across restarts and
// crashes. Run with -rewrite to regenerate the expected output, and keep
// the change only if you understand what caused it.
func TestEngine(t *testing.T) {
	datadriven.Walk(t, "../testdata/engine", func(t *testing.T, path string) {
		h := newHarness(t)
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			h.events = nil
			var lines []string
			if out := h.handle(t, d); out != "" {
				lines = append(lines, out)
			}
			return strings.Join(append(lines, h.events...), "\n")
		})
	})
}

func (h *harness) handle(t *testing.T, d *datadriven.TestData) string {
	switch d.Cmd {
	case "put":
		// Example: put k=foo v=bar [lease=0] [prev-kv] [ignore-value] [ignore-lease]
		return describe(h.write(&pb.InternalRaftRequest{Put: &pb.PutRequest{
			Key: []byte(arg(d, "k")), Value: []byte(arg(d, "v")), Lease: intArg(d, "lease"),
			PrevKv: d.HasArg("prev-kv"), IgnoreValue: d.HasArg("ignore-value"), IgnoreLease: d.HasArg("ignore-lease"),
		}}))
	case "del":
		// Example: del k=a [end=c] [prev-kv]
		return describe(h.write(&pb.InternalRaftRequest{DeleteRange: &pb.DeleteRangeRequest{
			Key: []byte(arg(d, "k")), RangeEnd: []byte(arg(d, "end")), PrevKv: d.HasArg("prev-kv"),
		}}))
	case "range":
		// Example: range k=a [end=c] [rev=2] [limit=1] [serializable] [keys-only]
		if !d.HasArg("serializable") {
			if r := h.do(Request{}); r.Err != nil {
				return "error: " + r.Err.Error()
			}
		}
		resp, err := Range(h.view, &pb.RangeRequest{
			Key: []byte(arg(d, "k")), RangeEnd: []byte(arg(d, "end")),
			Revision: intArg(d, "rev"), Limit: intArg(d, "limit"), KeysOnly: d.HasArg("keys-only"),
		})
		if err != nil {
			return "error: " + err.Error()
		}
		return describe(resp)
	case "compact":
		// Example: compact rev=3
		return describe(h.write(&pb.InternalRaftRequest{Compaction: &pb.CompactionRequest{Revision: intArg(d, "rev")}}))
	case "restart":
		// Example: restart — close the log and start the member again on the same disk.
		if err := h.log.Close(); err != nil {
			t.Fatal(err)
		}
		h.start()
		return h.restarted()
	case "crash":
		// Example: crash — lose everything not synced and start the member on what survived.
		h.disk = h.disk.Crash(rand.New(rand.NewPCG(3, 4)))
		h.start()
		return h.restarted()
	case "new":
		// Example: new snapshot-entries=5 [snapshots-retained=2] [quota=1000] [paced=500] — a new member on a new disk.
		h.snapshotEntries = uint64(intArg(d, "snapshot-entries"))
		h.snapshotsRetained = int(intArg(d, "snapshots-retained"))
		h.quotaBytes = intArg(d, "quota")
		h.pacedBytes = intArg(d, "paced")
		h.disk = diskio.NewSim()
		h.start()
		return fmt.Sprintf("started at index %d", h.node.Status().Applied)
	case "put-many":
		// Example: put-many n=10 [prefix=k] — n puts of <prefix><i>=v<i>, one entry each.
		var last proto.Message
		for i := range intArg(d, "n") {
			k := fmt.Sprintf("%s%d", arg(d, "prefix"), i)
			res, err := h.write(&pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(k), Value: []byte(fmt.Sprintf("v%d", i))}})
			if err != nil {
				return "error: " + err.Error()
			}
			last = res
		}
		return "last " + describe(last)
	case "hold-snapshots":
		// Example: hold-snapshots — keep the next job in flight instead of writing it.
		h.hold = true
		return ""
	case "finish-snapshot":
		// Example: finish-snapshot [fail] — write the held job (or report it failed) and stop holding.
		job := h.held
		if job == nil {
			return "no snapshot in flight"
		}
		h.hold, h.held = false, nil
		var fail error
		if d.HasArg("fail") {
			fail = errors.New("injected write error")
		}
		h.finishSnapshot(job, fail)
		h.stabilize()
		return ""
	case "alarm":
		// Example: alarm action=ACTIVATE [member=1] [type=NOSPACE]
		action := pb.AlarmRequest_AlarmAction(pb.AlarmRequest_AlarmAction_value[arg(d, "action")])
		typ := pb.AlarmType(pb.AlarmType_value[arg(d, "type")])
		return describe(h.write(&pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{Action: action, MemberID: uint64(intArg(d, "member")), Alarm: typ}}))
	case "grant":
		// Example: grant id=7 ttl=10
		return describe(h.write(&pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: intArg(d, "id"), TTL: intArg(d, "ttl")}}))
	case "revoke":
		// Example: revoke id=7
		return describe(h.write(&pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: intArg(d, "id")}}))
	case "renew":
		// Example: renew id=7 — a keepalive, served by the leader from memory.
		ttl, err := h.node.Renew(intArg(d, "id"))
		h.stabilize()
		if err != nil {
			return "error: " + err.Error()
		}
		return fmt.Sprintf("ttl=%d", ttl)
	case "ttl":
		// Example: ttl id=7 [keys]
		st, err := h.node.LeaseTimeToLive(intArg(d, "id"), d.HasArg("keys"))
		if err != nil {
			return "error: " + err.Error()
		}
		out := fmt.Sprintf("id=%d ttl=%d granted=%d", st.ID, st.TTL, st.GrantedTTL)
		for _, k := range st.Keys {
			out += " " + string(k)
		}
		return out
	case "leases":
		// Example: leases — the granted leases' IDs.
		return fmt.Sprint(h.node.Leases())
	case "tick":
		// Example: tick n=10 — n ticks of 100ms, each followed by whatever the member proposed.
		rev := h.node.store.Rev()
		for range intArg(d, "n") {
			h.node.Tick()
			h.stabilize()
		}
		return fmt.Sprintf("ticks=%d rev=%d (was %d)", h.node.ticks, h.node.store.Rev(), rev)
	case "bytes":
		// Example: bytes — what the store holds, as the quota measures it.
		return fmt.Sprintf("bytes=%d", h.node.Status().Bytes)
	case "state":
		// Example: state — the applied index, the log's first index, the revisions and the store's hash.
		return h.state()
	case "read-snapshot":
		// Example: read-snapshot — restore the log's base snapshot aside and compare it with the member's history.
		return h.readSnapshot()
	case "files":
		// Example: files — the snapshot files on disk.
		names, err := h.disk.List("member/snap")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(names, "\n")
	case "member-add", "member-update", "member-remove", "member-promote":
		// Example: member-add id=2 peer=http://b [learner]; member-update id=2 peer=http://c;
		// member-remove id=2; member-promote id=2 — a conf change, answered with the members after it.
		return h.confChange(d)
	case "member-attrs":
		// Example: member-attrs id=2 name=b client=http://b:2379 — a member publishes its name and client URLs.
		return describe(h.write(&pb.InternalRaftRequest{ClusterMemberAttrSet: &membershippb.ClusterMemberAttrSetRequest{
			Member_ID: uint64(intArg(d, "id")), MemberAttributes: &membershippb.Attributes{Name: arg(d, "name"), ClientUrls: []string{arg(d, "client")}},
		}}))
	case "members":
		// Example: members — the members table and the removed IDs, as Status reports them.
		st := h.node.Status()
		return describe(&pb.MemberListResponse{Members: st.Members}) + fmt.Sprintf("\nremoved=%v", st.RemovedIDs)
	case "damage-snapshot":
		// Example: damage-snapshot index=10 — flip a byte in the middle of that snapshot's file.
		return h.damageSnapshot(uint64(intArg(d, "index")))
	case "auth", "auth-check", "auth-state":
		return h.authCmd(d)
	}
	t.Fatalf("unknown command %q", d.Cmd)
	return ""
}

func (h *harness) confChange(d *datadriven.TestData) string {
	id := uint64(intArg(d, "id"))
	cc := &raftpb.ConfChange{NodeId: new(id)}
	switch d.Cmd {
	case "member-add":
		typ := raftpb.ConfChangeAddNode
		if d.HasArg("learner") {
			typ = raftpb.ConfChangeAddLearnerNode
		}
		cc.Type, cc.Context = &typ, EncodeMember(&pb.Member{ID: id, PeerURLs: []string{arg(d, "peer")}})
	case "member-update":
		typ := raftpb.ConfChangeUpdateNode
		cc.Type, cc.Context = &typ, EncodeMember(&pb.Member{ID: id, PeerURLs: []string{arg(d, "peer")}})
	case "member-remove":
		typ := raftpb.ConfChangeRemoveNode
		cc.Type = &typ
	case "member-promote":
		typ := raftpb.ConfChangeAddNode
		cc.Type, cc.Context = &typ, PromoteContext
	}
	r := h.do(Request{ConfChange: cc})
	out := describe(r.Result, r.Err)
	return out + fmt.Sprintf("\nconf: voters=%v learners=%v", h.node.confState.GetVoters(), h.node.confState.GetLearners())
}

func (h *harness) restarted() string {
	if h.openedAt > 0 {
		return fmt.Sprintf("restarted from the snapshot at index %d; now at revision %d", h.openedAt, h.view.Rev())
	}
	return fmt.Sprintf("restarted at revision %d", h.view.Rev())
}

func (h *harness) readSnapshot() string {
	h.t.Helper()
	snap, err := h.log.Snapshot()
	if err != nil {
		h.t.Fatal(err)
	}
	st, err := h.node.loadSnapshot(snap.GetMetadata())
	if err != nil {
		return "error: " + err.Error()
	}
	store := st.store
	got, _, err := store.View().HashKV(0)
	if err != nil {
		h.t.Fatal(err)
	}
	want, _, err := h.view.HashKV(store.Rev())
	if err != nil {
		return "error: " + err.Error()
	}
	return fmt.Sprintf("snapshot at index %d holds revision %d, hash %08x; the member's hash at revision %d is %08x",
		snap.GetMetadata().GetIndex(), store.Rev(), got, store.Rev(), want)
}

func (h *harness) state() string {
	h.t.Helper()
	hash, compact, err := h.view.HashKV(0)
	if err != nil {
		h.t.Fatal(err)
	}
	first, err := h.log.FirstIndex()
	if err != nil {
		h.t.Fatal(err)
	}
	return fmt.Sprintf("applied=%d first-index=%d rev=%d compact=%d hash=%08x",
		h.node.Status().Applied, first, h.view.Rev(), compact, hash)
}

func (h *harness) damageSnapshot(index uint64) string {
	h.t.Helper()
	names, err := h.disk.List("member/snap")
	if err != nil {
		h.t.Fatal(err)
	}
	prefix := fmt.Sprintf("%016x-", index)
	for _, name := range names {
		if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, ".snap") {
			continue
		}
		f, err := h.disk.Open("member/snap/" + name)
		if err != nil {
			h.t.Fatal(err)
		}
		size, err := f.Size()
		if err != nil {
			h.t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, size/2); err != nil {
			h.t.Fatal(err)
		}
		b[0] ^= 0x40
		if _, err := f.WriteAt(b, size/2); err != nil {
			h.t.Fatal(err)
		}
		if err := errors.Join(f.Sync(), f.Close()); err != nil {
			h.t.Fatal(err)
		}
		return fmt.Sprintf("flipped a bit at offset %d of %s", size/2, name)
	}
	return "no snapshot at index " + strconv.FormatUint(index, 10)
}

func (h *harness) write(op *pb.InternalRaftRequest) (proto.Message, error) {
	r := h.do(Request{Op: op})
	return r.Result, r.Err
}

func arg(d *datadriven.TestData, key string) string {
	for _, a := range d.CmdArgs {
		if a.Key == key && len(a.Vals) > 0 {
			return a.Vals[0]
		}
	}
	return ""
}

func intArg(d *datadriven.TestData, key string) int64 {
	s := arg(d, key)
	if s == "" {
		return 0
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		d.Fatalf(nil, "%s: %v", key, err)
	}
	return v
}

// describe renders a response in a stable one-line-per-part text form
// (protobuf's text format varies between builds on purpose).
func describe(m proto.Message, errs ...error) string {
	if len(errs) > 0 && errs[0] != nil {
		return "error: " + errs[0].Error()
	}
	var b strings.Builder
	switch r := m.(type) {
	case *pb.PutResponse:
		fmt.Fprintf(&b, "rev=%d", r.Header.Revision)
		if r.PrevKv != nil {
			fmt.Fprintf(&b, " prev=%s", describeKV(r.PrevKv))
		}
	case *pb.DeleteRangeResponse:
		fmt.Fprintf(&b, "rev=%d deleted=%d", r.Header.Revision, r.Deleted)
		for _, kv := range r.PrevKvs {
			fmt.Fprintf(&b, "\nprev %s", describeKV(kv))
		}
	case *pb.RangeResponse:
		fmt.Fprintf(&b, "rev=%d count=%d more=%t", r.Header.Revision, r.Count, r.More)
		for _, kv := range r.Kvs {
			fmt.Fprintf(&b, "\n%s", describeKV(kv))
		}
	case *pb.CompactionResponse:
		fmt.Fprintf(&b, "rev=%d", r.Header.Revision)
	case *pb.MemberListResponse:
		fmt.Fprintf(&b, "members=%d", len(r.Members))
		for _, mb := range r.Members {
			fmt.Fprintf(&b, "\nid=%d name=%q peers=%v clients=%v learner=%t", mb.ID, mb.Name, mb.PeerURLs, mb.ClientURLs, mb.IsLearner)
		}
	case *pb.LeaseGrantResponse:
		fmt.Fprintf(&b, "rev=%d id=%d ttl=%d", r.Header.Revision, r.ID, r.TTL)
	case *pb.LeaseRevokeResponse:
		fmt.Fprintf(&b, "rev=%d", r.Header.Revision)
	case *pb.AlarmResponse:
		fmt.Fprintf(&b, "rev=%d alarms=%d", r.Header.Revision, len(r.Alarms))
		for _, a := range r.Alarms {
			fmt.Fprintf(&b, "\nmember=%d alarm=%s", a.MemberID, a.Alarm)
		}
	default:
		fmt.Fprintf(&b, "%T", m)
	}
	return b.String()
}

func describeKV(kv *mvccpb.KeyValue) string {
	s := fmt.Sprintf("%s=%s create=%d mod=%d ver=%d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version)
	if kv.Lease != 0 {
		s += fmt.Sprintf(" lease=%d", kv.Lease)
	}
	return s
}
