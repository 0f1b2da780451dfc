package server

import (
	"context"
	"errors"
	"io"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"
	"google.golang.org/grpc/metadata"

	"github.com/basaltdb/basalt/engine"
)

// leaseServer serves etcd's Lease service.
type leaseServer struct {
	pb.UnimplementedLeaseServer
	m *Member
}

// LeaseGrant picks an ID when the client gave none, as etcd does at the
// door, and grants through raft, subject to the quota.
func (s *leaseServer) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	for r.ID == 0 {
		r.ID = int64(s.m.leaseIDs.Next() & (1<<63 - 1))
	}
	res, err := s.m.proposeWrite(ctx, &pb.InternalRaftRequest{LeaseGrant: r})
	if err != nil {
		return nil, err
	}
	resp := res.(*pb.LeaseGrantResponse)
	s.m.header(resp.Header)
	return resp, nil
}

// LeaseRevoke deletes the lease and its keys through raft; like deletes,
// it works while the NOSPACE alarm is raised.
func (s *leaseServer) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	res, err := s.m.propose(ctx, &pb.InternalRaftRequest{LeaseRevoke: r})
	if err != nil {
		return nil, err
	}
	resp := res.(*pb.LeaseRevokeResponse)
	s.m.header(resp.Header)
	return resp, nil
}

// LeaseTimeToLive answers from the leader's memory once a read barrier
// has confirmed its leadership and applied what was committed (etcd's
// waitAppliedIndex); an unknown lease has TTL -1, not an error. A member
// that does not lead asks the leader.
func (s *leaseServer) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	var resp *pb.LeaseTimeToLiveResponse
	var err error
	if s.m.leads() {
		resp, err = s.m.leaseTimeToLiveLocal(ctx, r)
	} else {
		resp = new(pb.LeaseTimeToLiveResponse)
		err = s.m.forward(ctx, peerLeaseTTLPath, r, resp)
	}
	if err != nil {
		return nil, toGRPC(err)
	}
	resp.Header = s.m.header(&pb.ResponseHeader{Revision: s.m.loop.view.Load().Rev()})
	return resp, nil
}

// leaseTimeToLiveLocal answers LeaseTimeToLive on the leader.
func (m *Member) leaseTimeToLiveLocal(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if err := m.readBarrier(ctx); err != nil {
		return nil, err
	}
	var st engine.LeaseStatus
	var err error
	if cerr := m.loop.call(ctx, func(n *engine.Node) { st, err = n.LeaseTimeToLive(r.ID, r.Keys) }); cerr != nil {
		return nil, cerr
	}
	switch {
	case errors.Is(err, engine.ErrLeaseNotFound):
		return &pb.LeaseTimeToLiveResponse{ID: r.ID, TTL: -1}, nil
	case err != nil:
		return nil, err
	}
	return &pb.LeaseTimeToLiveResponse{ID: r.ID, TTL: st.TTL, GrantedTTL: st.GrantedTTL, Keys: st.Keys}, nil
}

// LeaseLeases lists the leases this member knows, as etcd lists its
// lessor's without going through raft.
func (s *leaseServer) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	var ids []int64
	if err := s.m.loop.call(ctx, func(n *engine.Node) { ids = n.Leases() }); err != nil {
		return nil, toGRPC(err)
	}
	resp := &pb.LeaseLeasesResponse{
		Header: s.m.header(&pb.ResponseHeader{Revision: s.m.loop.view.Load().Rev()}),
		Leases: make([]*pb.LeaseStatus, len(ids)),
	}
	for i, id := range ids {
		resp.Leases[i] = &pb.LeaseStatus{ID: id}
	}
	return resp, nil
}

// LeaseKeepAlive renews each lease the stream names and answers its TTL;
// an unknown, expired or revoked lease answers TTL 0, never success
// (etcd #20616).
func (s *leaseServer) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	ctx := stream.Context()
	// clientv3 opens this stream requiring a leader, which etcd checks as
	// the stream starts.
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if ks := md[rpctypes.MetadataRequireLeaderKey]; len(ks) > 0 && ks[0] == rpctypes.MetadataHasLeader && s.m.loop.status.Load().Leader == 0 {
			return rpctypes.ErrGRPCNoLeader
		}
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		// The header is taken before the renewal, so its revision is never
		// after one that revoked the lease.
		resp := &pb.LeaseKeepAliveResponse{ID: req.ID, Header: s.m.header(&pb.ResponseHeader{Revision: s.m.loop.view.Load().Rev()})}
		ttl, err := s.m.renew(ctx, req.ID)
		switch {
		case errors.Is(err, engine.ErrLeaseNotFound):
			ttl = 0
		case err != nil:
			return toGRPC(err)
		}
		resp.TTL = ttl
		if err := stream.Send(resp); err != nil {
			s.m.lg.Debug("failed to send lease keepalive response to gRPC stream", zap.Error(err))
			return err
		}
	}
}

// renew renews lease id; a member that does not lead asks the leader,
// as etcd does over its peer HTTP.
func (m *Member) renew(ctx context.Context, id int64) (int64, error) {
	if m.leads() {
		return m.renewLocal(ctx, id)
	}
	var resp pb.LeaseKeepAliveResponse
	err := m.forward(ctx, peerLeaseRenewPath, &pb.LeaseKeepAliveRequest{ID: id}, &resp)
	if err != nil && rpctypes.ErrorDesc(err) == rpctypes.ErrorDesc(rpctypes.ErrGRPCLeaseNotFound) {
		return 0, engine.ErrLeaseNotFound
	}
	return resp.TTL, err
}

// renewLocal renews lease id on this member, which must lead: the read
// barrier confirms the leadership with a quorum (etcd's ensureLeadership)
// and lets a lease granted just before be applied.
func (m *Member) renewLocal(ctx context.Context, id int64) (int64, error) {
	if err := m.readBarrier(ctx); err != nil {
		return 0, err
	}
	var ttl int64
	var err error
	if cerr := m.loop.call(ctx, func(n *engine.Node) { ttl, err = n.Renew(id) }); cerr != nil {
		return 0, cerr
	}
	return ttl, err
}

// leads reports whether this member is the leader, as far as it knows.
func (m *Member) leads() bool { return m.loop.status.Load().Leader == m.memberID }
