package server

import (
	"bytes"
	"math"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/engine"
	"github.com/basaltdb/basalt/engine/mvcc"
)

// rangeStreamChunkInitial is the size, in keys, of a RangeStream's first
// chunk; later chunks double or halve to land near --max-request-bytes,
// as etcd's do.
const rangeStreamChunkInitial = 10

func checkRangeStream(r *pb.RangeRequest) error {
	if err := checkRange(r); err != nil {
		return err
	}
	defaultOrder := r.SortOrder == pb.RangeRequest_NONE ||
		(r.SortTarget == pb.RangeRequest_KEY && r.SortOrder == pb.RangeRequest_ASCEND)
	if !defaultOrder {
		return status.Error(codes.Unimplemented, "RangeStream does not support custom sort orders")
	}
	if r.MinModRevision != 0 || r.MaxModRevision != 0 || r.MinCreateRevision != 0 || r.MaxCreateRevision != 0 {
		return status.Error(codes.Unimplemented, "RangeStream does not support revision filters")
	}
	return nil
}

func (s *kvServer) RangeStream(r *pb.RangeRequest, rs pb.KV_RangeStreamServer) error {
	if err := checkRangeStream(r); err != nil {
		return err
	}
	if !r.Serializable {
		if err := s.m.readBarrier(rs.Context()); err != nil {
			return toGRPC(err)
		}
	}
	err := rangeStream(s.m.loop.view.Load(), r, s.m.cfg.RequestBytesMax, func(resp *pb.RangeResponse) error {
		if resp.Header != nil {
			s.m.header(resp.Header)
		}
		return rs.Send(&pb.RangeStreamResponse{RangeResponse: resp})
	})
	return toGRPC(err)
}

// rangeStream sends r's result from one view in chunks: each carries a
// slice of the kvs in order, and only the last one the header, more and
// count, so that the chunks merged equal the Range answer at the view's
// revision. r is modified.
func rangeStream(v *mvcc.View, r *pb.RangeRequest, chunkBytesTarget int, send func(*pb.RangeResponse) error) error {
	if r.CountOnly {
		resp, err := engine.Range(v, r)
		if err != nil {
			return err
		}
		return send(&pb.RangeResponse{Header: &pb.ResponseHeader{Revision: resp.Header.Revision}, Count: resp.Count})
	}
	total := r.Limit
	if total == 0 {
		total = math.MaxInt64
	}
	r.Limit = min(rangeStreamChunkInitial, total)
	sent := int64(0)
	for {
		resp, err := engine.Range(v, r)
		if err != nil {
			return err
		}
		sent += int64(len(resp.Kvs))
		out := &pb.RangeResponse{Kvs: resp.Kvs}
		done := !resp.More || sent == total
		if done {
			out.Header = &pb.ResponseHeader{Revision: resp.Header.Revision}
			out.More = resp.More
			// count is the range's size from where this stream started:
			// the keys sent plus those after the last one.
			out.Count = sent
			if resp.More {
				rest, err := engine.Range(v, &pb.RangeRequest{Key: nextKey(resp), RangeEnd: r.RangeEnd, Revision: r.Revision, CountOnly: true})
				if err != nil {
					return err
				}
				out.Count += rest.Count
			}
		}
		if err := send(out); err != nil || done {
			return err
		}
		r.Key = nextKey(resp)
		r.Limit = min(nextChunkLimit(r.Limit, proto.Size(resp), chunkBytesTarget), total-sent)
	}
}

// nextKey is the smallest key after the last one of resp.
func nextKey(resp *pb.RangeResponse) []byte {
	last := resp.Kvs[len(resp.Kvs)-1].Key
	return append(bytes.Clone(last), 0)
}

// nextChunkLimit doubles a chunk that came out under half the target size
// and halves one over twice it; in between it keeps the size, so chunks
// near the target do not flap.
func nextChunkLimit(limit int64, size, target int) int64 {
	switch {
	case size < target/2:
		limit *= 2
	case size > target*2:
		limit /= 2
	}
	return max(limit, 1)
}
