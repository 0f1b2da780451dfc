package server

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/basaltdb/basalt/engine"
)

// kvServer serves etcd's KV service.
type kvServer struct {
	pb.UnimplementedKVServer
	m *Member
}

func (s *kvServer) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	if err := checkRange(r); err != nil {
		return nil, err
	}
	if !r.Serializable {
		if err := s.m.readBarrier(ctx); err != nil {
			return nil, toGRPC(err)
		}
	}
	resp, err := engine.Range(s.m.loop.view.Load(), r)
	if err != nil {
		return nil, toGRPC(err)
	}
	s.m.header(resp.Header)
	return resp, nil
}

func (s *kvServer) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	if err := checkPut(r); err != nil {
		return nil, err
	}
	res, err := s.m.propose(ctx, &pb.InternalRaftRequest{Put: r})
	if err != nil {
		return nil, err
	}
	resp := res.(*pb.PutResponse)
	s.m.header(resp.Header)
	return resp, nil
}

func (s *kvServer) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	if err := checkDeleteRange(r); err != nil {
		return nil, err
	}
	res, err := s.m.propose(ctx, &pb.InternalRaftRequest{DeleteRange: r})
	if err != nil {
		return nil, err
	}
	resp := res.(*pb.DeleteRangeResponse)
	s.m.header(resp.Header)
	return resp, nil
}

func (s *kvServer) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := checkTxn(r, s.m.cfg.TxnOpsMax); err != nil {
		return nil, err
	}
	if engine.IsTxnReadOnly(r) {
		if !engine.IsTxnSerializable(r) {
			if err := s.m.readBarrier(ctx); err != nil {
				return nil, toGRPC(err)
			}
		}
		resp, err := engine.ReadTxn(s.m.loop.view.Load(), r)
		if err != nil {
			return nil, toGRPC(err)
		}
		s.m.header(resp.Header)
		return resp, nil
	}
	res, err := s.m.propose(ctx, &pb.InternalRaftRequest{Txn: r})
	if err != nil {
		return nil, err
	}
	resp := res.(*pb.TxnResponse)
	s.m.header(resp.Header)
	return resp, nil
}

func (s *kvServer) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	res, err := s.m.propose(ctx, &pb.InternalRaftRequest{Compaction: r})
	if err != nil {
		return nil, err
	}
	resp := res.(*pb.CompactionResponse)
	s.m.header(resp.Header)
	return resp, nil
}

// propose sends op through raft and returns its applied result, or the
// gRPC error to answer.
func (m *Member) propose(ctx context.Context, op *pb.InternalRaftRequest) (any, error) {
	resp, err := m.loop.do(ctx, engine.Request{Op: op})
	if err != nil {
		return nil, toGRPC(err)
	}
	return resp.Result, nil
}

// readBarrier returns once a read from the newest view is linearizable.
func (m *Member) readBarrier(ctx context.Context) error {
	_, err := m.loop.do(ctx, engine.Request{})
	return err
}
