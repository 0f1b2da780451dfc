//go:build difftest

package difftest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestGRPC compares raw gRPC answers as protobuf messages: everything but
// the top-level header's cluster_id, member_id and raft_term must be equal,
// and errors must carry the same code, message and details.
func TestGRPC(t *testing.T) {
	n := opsFor(grpcOpsDefault)
	ref, cand := startPair(t)
	g := newGen(*seedFlag, true, *leasesFlag)
	sum := tally{}
	for i := range n {
		o := g.next()
		refResp, refErr := callGRPC(ref.conn, o.req)
		candResp, candErr := callGRPC(cand.conn, o.req)
		if err := ref.alive(); err != nil {
			t.Fatalf("the reference died on op #%d (seed %d):\n%s\n%v", i, *seedFlag, describe(o.req), err)
		}
		if err := cand.alive(); err != nil {
			mismatch(t, sum, i, describe(o.req), showGRPC(refResp, refErr), err.Error())
		}
		if !sameGRPC(refResp, refErr, candResp, candErr) {
			mismatch(t, sum, i, describe(o.req), showGRPC(refResp, refErr), showGRPC(candResp, candErr))
		}
		logOp(t, i, describe(o.req), showGRPC(refResp, refErr))
		sum.add(o.kind, outcome(refResp, refErr))
		g.observe(o.req, refResp, refErr == nil)
	}
	t.Log(sum.String())
}

// callGRPC sends req with the RPC its type names.
func callGRPC(conn *grpc.ClientConn, req proto.Message) (proto.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	kv, lease := pb.NewKVClient(conn), pb.NewLeaseClient(conn)
	switch r := req.(type) {
	case *pb.RangeRequest:
		return nilIfErr(kv.Range(ctx, r))
	case *pb.PutRequest:
		return nilIfErr(kv.Put(ctx, r))
	case *pb.DeleteRangeRequest:
		return nilIfErr(kv.DeleteRange(ctx, r))
	case *pb.TxnRequest:
		return nilIfErr(kv.Txn(ctx, r))
	case *pb.CompactionRequest:
		return nilIfErr(kv.Compact(ctx, r))
	case *pb.LeaseGrantRequest:
		return nilIfErr(lease.LeaseGrant(ctx, r))
	case *pb.LeaseRevokeRequest:
		return nilIfErr(lease.LeaseRevoke(ctx, r))
	}
	panic(fmt.Sprintf("difftest: no RPC for %T", req))
}

// nilIfErr turns a typed nil response into an untyped one.
func nilIfErr[T proto.Message](resp T, err error) (proto.Message, error) {
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// observe moves the generator's view of the reference forward.
func (g *gen) observe(req, resp proto.Message, ok bool) {
	if !ok {
		return
	}
	if h, isH := resp.(interface{ GetHeader() *pb.ResponseHeader }); isH && h.GetHeader().GetRevision() > 0 {
		g.rev = h.GetHeader().GetRevision()
	}
	if c, isC := req.(*pb.CompactionRequest); isC {
		g.compacted = c.Revision
	}
}

func outcome(resp proto.Message, err error) string {
	if t, ok := resp.(*pb.TxnResponse); ok {
		return fmt.Sprintf("OK succeeded=%t", t.Succeeded)
	}
	if err == nil {
		return "OK"
	}
	s := status.Convert(err)
	msg, _, _ := strings.Cut(s.Message(), " (")
	return s.Code().String() + " " + msg
}

func sameGRPC(refResp proto.Message, refErr error, candResp proto.Message, candErr error) bool {
	if (refErr == nil) != (candErr == nil) {
		return false
	}
	if refErr != nil {
		return proto.Equal(status.Convert(refErr).Proto(), status.Convert(candErr).Proto())
	}
	return proto.Equal(masked(refResp), masked(candResp))
}

// masked is resp without the member-specific parts of its top-level header;
// sub-response headers are compared whole (etcd sets only their revision).
func masked(resp proto.Message) proto.Message {
	c := proto.Clone(resp)
	f := c.ProtoReflect().Descriptor().Fields().ByName("header")
	if f == nil || !c.ProtoReflect().Has(f) {
		return c
	}
	h := c.ProtoReflect().Get(f).Message().Interface().(*pb.ResponseHeader)
	h.ClusterId, h.MemberId, h.RaftTerm = 0, 0, 0
	return c
}

func showGRPC(resp proto.Message, err error) string {
	if err != nil {
		s := status.Convert(err)
		return fmt.Sprintf("error code=%s message=%q details=%v", s.Code(), s.Message(), s.Details())
	}
	return describe(resp)
}

// describe is the text form of m with long bytes fields cut short.
func describe(m proto.Message) string {
	if m == nil {
		return "<nil>"
	}
	c := proto.Clone(m)
	shorten(c.ProtoReflect())
	return fmt.Sprintf("%T %s", m, prototext.MarshalOptions{Multiline: true, Indent: "  "}.Format(c))
}

func shorten(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := range l.Len() {
				shorten(l.Get(i).Message())
			}
		case fd.Message() != nil && !fd.IsMap():
			shorten(v.Message())
		case fd.Kind() == protoreflect.BytesKind && !fd.IsList() && len(v.Bytes()) > shownBytesMax:
			b := v.Bytes()
			m.Set(fd, protoreflect.ValueOfBytes(fmt.Appendf(append([]byte{}, b[:shownBytesMax/2]...), "...(%d bytes)", len(b))))
		}
		return true
	})
}
