package engine

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/diskio"
	"github.com/basaltdb/basalt/raftlog"
)

// harness drives one member on the simulated disk the way the server's
// loop does: submit, then persist, send and advance until idle.
type harness struct {
	t    *testing.T
	disk *diskio.Sim
	log  *raftlog.Log
	node *Node
	// answers collects responses by ID as Advance hands them out.
	answers map[ID]Response
	// view is the newest published read view.
	view interface {
		rangeReader
		Rev() int64
	}
}

const harnessMemberID = 1

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, disk: diskio.NewSim()}
	h.start()
	return h
}

func (h *harness) start() {
	h.t.Helper()
	log, err := raftlog.Open(h.disk, "member", raftlog.Options{SegmentBytes: 1 << 20})
	if err != nil {
		h.t.Fatal(err)
	}
	node, err := NewNode(Config{
		ID:                  harnessMemberID,
		Log:                 log,
		Bootstrap:           []Peer{{ID: harnessMemberID}},
		ElectionTicks:       10,
		HeartbeatTicks:      1,
		RequestTimeoutTicks: 100,
		RequestBytesMax:     1 << 20,
		Rand:                rand.New(rand.NewPCG(1, 2)),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.log, h.node, h.answers = log, node, map[ID]Response{}
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
		if out.View != nil {
			h.view = out.View
		}
		for _, r := range out.Responses {
			h.answers[r.ID] = r
		}
	}
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
// KV requests, with their revisions, across restarts.
func TestEngine(t *testing.T) {
	datadriven.Walk(t, "../testdata/engine", func(t *testing.T, path string) {
		h := newHarness(t)
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
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
				// Example: range k=a [end=c] [rev=2] [limit=1] [serializable]
				if !d.HasArg("serializable") {
					if r := h.do(Request{}); r.Err != nil {
						return "error: " + r.Err.Error()
					}
				}
				resp, err := Range(h.view, &pb.RangeRequest{
					Key: []byte(arg(d, "k")), RangeEnd: []byte(arg(d, "end")),
					Revision: intArg(d, "rev"), Limit: intArg(d, "limit"),
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
				return fmt.Sprintf("restarted at revision %d", h.view.Rev())
			}
			t.Fatalf("unknown command %q", d.Cmd)
			return ""
		})
	})
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
