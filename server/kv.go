package server

import (
	"context"
	"errors"
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"

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
	res, err := s.m.proposeWrite(ctx, &pb.InternalRaftRequest{Put: r})
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
	res, err := s.m.proposeWrite(ctx, &pb.InternalRaftRequest{Txn: r})
	if err != nil {
		return nil, err
	}
	resp := res.(*pb.TxnResponse)
	s.m.header(resp.Header)
	return resp, nil
}

func (s *kvServer) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	if err := s.m.watch.waitRev(ctx, r.Revision); err != nil {
		return nil, toGRPC(err)
	}
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
	start := time.Now()
	resp, err := m.loop.do(ctx, engine.Request{Op: op})
	if err != nil {
		return nil, m.proposeError(err, start)
	}
	return resp.Result, nil
}

// proposeWrite proposes op, which may add data, after checking it fits the
// quota. As in etcd, a write that does not fit raises the NOSPACE alarm for
// the whole cluster and is refused; so is one that applied past the quota.
func (m *Member) proposeWrite(ctx context.Context, op *pb.InternalRaftRequest) (any, error) {
	if cost := engine.QuotaCost(op); cost > 0 && m.loop.status.Load().Bytes+cost >= m.quotaBytes() {
		return nil, m.raiseNoSpace(ctx)
	}
	start := time.Now()
	res, err := m.loop.do(ctx, engine.Request{Op: op})
	if errors.Is(err, engine.ErrNoSpace) {
		return nil, m.raiseNoSpace(ctx)
	}
	if err != nil {
		return nil, m.proposeError(err, start)
	}
	return res.Result, nil
}

// raiseNoSpace raises this member's NOSPACE alarm unless it is raised, and
// returns the error a write refused for space answers.
func (m *Member) raiseNoSpace(ctx context.Context) error {
	raised := slices.ContainsFunc(m.loop.status.Load().Alarms, func(a *pb.AlarmMember) bool {
		return a.MemberID == m.memberID && a.Alarm == pb.AlarmType_NOSPACE
	})
	if !raised {
		m.lg.Warn("database space exceeded; raising the NOSPACE alarm", zap.Int64("quota-size-bytes", m.quotaBytes()))
		_, err := m.loop.do(ctx, engine.Request{Op: &pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{
			Action: pb.AlarmRequest_ACTIVATE, MemberID: m.memberID, Alarm: pb.AlarmType_NOSPACE,
		}}})
		if err != nil {
			return toGRPC(err)
		}
	}
	return rpctypes.ErrGRPCNoSpace
}

// quotaBytes is the store size writes may reach (--quota-backend-bytes).
func (m *Member) quotaBytes() int64 {
	if m.cfg.QuotaBackendBytes <= 0 {
		return quotaBytesDefault
	}
	return m.cfg.QuotaBackendBytes
}

// readBarrier returns once a read from the newest view is linearizable.
func (m *Member) readBarrier(ctx context.Context) error {
	start := time.Now()
	if _, err := m.loop.do(ctx, engine.Request{}); err != nil {
		return m.proposeError(err, start)
	}
	return nil
}
