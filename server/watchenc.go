package server

import (
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// A watch event goes to every watcher that wants it: with 10k watchers on a key, grpc's codec
// would marshal the same events 10k times. Instead the events of a revision are encoded once
// (watch.Events.Encoded) and each watcher's response is sent as its own few bytes (header,
// watch ID) followed by those shared bytes, through watchCodec, which passes pre-encoded
// messages through and hands every other message to grpc's proto codec. The bytes are exactly
// what proto.Marshal gives for the same *pb.WatchResponse (TestWatchEncoding).

// preEncoded is a message in its wire form: a head of its own, then shared bytes.
// Invariant: no part is modified once the message is handed to grpc (which writes them after
// SendMsg returns).
type preEncoded struct {
	bufs []mem.Buffer
	// inline and headBytes hold the parts of the usual message (a head and one list of
	// events) in the same allocation.
	inline    [2]mem.Buffer
	headBytes [watchHeadBytesMax]byte
}

// watchHeadBytesMax is room for a response's head without a cancel reason: a header of four
// varint fields and four more fields, each at most a 2-byte tag and a 10-byte varint.
const watchHeadBytesMax = 8 * 12

// newPreEncoded returns r, without its events, followed by events, r's events encoded.
func newPreEncoded(r *pb.WatchResponse, events ...[]byte) *preEncoded {
	p := &preEncoded{}
	p.bufs = append(p.inline[:0], mem.SliceBuffer(appendWatchHead(p.headBytes[:0], r)))
	for _, e := range events {
		p.bufs = append(p.bufs, mem.SliceBuffer(e))
	}
	return p
}

// Len returns the message's size in bytes.
func (p *preEncoded) Len() int { return mem.BufferSlice(p.bufs).Len() }

// watchCodec is the client port's gRPC codec.
type watchCodec struct {
	proto encoding.CodecV2
}

func newWatchCodec() watchCodec {
	return watchCodec{proto: encoding.GetCodecV2(grpcproto.Name)}
}

func (c watchCodec) Marshal(v any) (mem.BufferSlice, error) {
	if p, ok := v.(*preEncoded); ok {
		return p.bufs, nil
	}
	return c.proto.Marshal(v)
}

func (c watchCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

// Name is the proto codec's, so that content-type negotiation is unchanged.
func (c watchCodec) Name() string { return grpcproto.Name }

// WatchResponse's field numbers (etcdserverpb rpc.proto); proto.Marshal writes them in this
// order, events last.
const (
	watchFieldHeader          protowire.Number = 1
	watchFieldWatchID         protowire.Number = 2
	watchFieldCreated         protowire.Number = 3
	watchFieldCanceled        protowire.Number = 4
	watchFieldCompactRevision protowire.Number = 5
	watchFieldCancelReason    protowire.Number = 6
	watchFieldFragment        protowire.Number = 7
	watchFieldEvents          protowire.Number = 11

	headerFieldClusterID protowire.Number = 1
	headerFieldMemberID  protowire.Number = 2
	headerFieldRevision  protowire.Number = 3
	headerFieldRaftTerm  protowire.Number = 4
)

// appendWatchHead appends r's fields before its events (1 to 7), as proto.Marshal encodes
// them: zero values left out, a present header always written. r and its header have no
// unknown fields (the hub builds them).
func appendWatchHead(b []byte, r *pb.WatchResponse) []byte {
	if h := r.Header; h != nil {
		var hb [4 * (1 + 10)]byte // four fields: a one-byte tag and a varint of at most 10 bytes each
		hdr := appendVarintField(hb[:0], headerFieldClusterID, h.ClusterId)
		hdr = appendVarintField(hdr, headerFieldMemberID, h.MemberId)
		hdr = appendVarintField(hdr, headerFieldRevision, uint64(h.Revision))
		hdr = appendVarintField(hdr, headerFieldRaftTerm, h.RaftTerm)
		b = protowire.AppendTag(b, watchFieldHeader, protowire.BytesType)
		b = protowire.AppendBytes(b, hdr)
	}
	b = appendVarintField(b, watchFieldWatchID, uint64(r.WatchId))
	b = appendVarintField(b, watchFieldCreated, protowire.EncodeBool(r.Created))
	b = appendVarintField(b, watchFieldCanceled, protowire.EncodeBool(r.Canceled))
	b = appendVarintField(b, watchFieldCompactRevision, uint64(r.CompactRevision))
	if r.CancelReason != "" {
		b = protowire.AppendTag(b, watchFieldCancelReason, protowire.BytesType)
		b = protowire.AppendString(b, r.CancelReason)
	}
	return appendVarintField(b, watchFieldFragment, protowire.EncodeBool(r.Fragment))
}

// appendVarintField appends field num with value v unless v is zero (proto3's default).
func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// appendWatchEvents appends evs as a WatchResponse's events field.
func appendWatchEvents(b []byte, evs []*mvccpb.Event) ([]byte, error) {
	for _, ev := range evs {
		b = protowire.AppendTag(b, watchFieldEvents, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(proto.Size(ev)))
		var err error
		if b, err = (proto.MarshalOptions{}).MarshalAppend(b, ev); err != nil {
			return nil, fmt.Errorf("encoding watch event: %w", err)
		}
	}
	return b, nil
}
