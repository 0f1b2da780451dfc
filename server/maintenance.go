package server

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/version"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// clusterVersion and storageVersion are what a 3.7 cluster reports.
const (
	clusterVersion = "3.7.0"
	storageVersion = "3.7.0"
)

// maintenanceServer serves etcd's Maintenance service.
type maintenanceServer struct {
	pb.UnimplementedMaintenanceServer
	m *Member
}

func (s *maintenanceServer) Status(ctx context.Context, r *pb.StatusRequest) (*pb.StatusResponse, error) {
	st := s.m.loop.status.Load()
	view := s.m.loop.view.Load()
	// etcdctl's table divides by dbSize; etcd's file is never empty.
	dbBytes := max(st.Bytes, 1)
	resp := &pb.StatusResponse{
		Header:           s.m.header(&pb.ResponseHeader{Revision: view.Rev()}),
		Version:          version.Version,
		DbSize:           dbBytes,
		DbSizeInUse:      dbBytes,
		Leader:           st.Leader,
		RaftIndex:        st.Commit,
		RaftTerm:         st.Term,
		RaftAppliedIndex: st.Applied,
		StorageVersion:   storageVersion,
		DbSizeQuota:      s.m.quotaBytes(),
		DowngradeInfo:    &pb.DowngradeInfo{},
		IsLearner:        s.m.isLearner(),
	}
	if st.Leader == 0 {
		resp.Errors = append(resp.Errors, "etcdserver: no leader")
	}
	for _, a := range st.Alarms {
		resp.Errors = append(resp.Errors, a.String())
	}
	return resp, nil
}

// Alarm gets, raises or clears alarms; like etcd, every action goes through
// raft, so a GET sees every alarm applied before it.
func (s *maintenanceServer) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	res, err := s.m.propose(ctx, &pb.InternalRaftRequest{Alarm: r})
	if err != nil {
		return nil, err
	}
	resp := res.(*pb.AlarmResponse)
	s.m.header(resp.Header)
	return resp, nil
}

// clusterServer serves etcd's Cluster service.
type clusterServer struct {
	pb.UnimplementedClusterServer
	m *Member
}

// keepaliveOptions are etcd's gRPC keepalive settings.
func keepaliveOptions(cfg *Config) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: cfg.GRPCKeepaliveMinTime, PermitWithoutStream: false}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: cfg.GRPCKeepaliveInterval, Timeout: cfg.GRPCKeepaliveTimeout}),
	}
}

// HashKV hashes the keys and versions readable at a revision, so members
// can be compared; the hash is basalt's own, equal on every member with
// the same state, not etcd's number. As etcd's, the hash at one of the
// newest compaction revisions is the one taken when compacting there,
// even once a later compaction made that revision unreadable.
func (s *maintenanceServer) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	view := s.m.loop.view.Load()
	rev := r.Revision
	hash, compactRev, ok, err := s.m.loop.hashes.lookup(ctx, rev)
	if err != nil {
		return nil, toGRPC(err)
	}
	if !ok {
		if rev <= 0 {
			rev = view.Rev()
		}
		if hash, _, err = view.HashKV(rev); err != nil {
			return nil, toGRPC(err)
		}
		compactRev = view.FirstRev() // etcd's -1 before the first compaction
	}
	return &pb.HashKVResponse{
		Header:          s.m.header(&pb.ResponseHeader{Revision: view.Rev()}),
		Hash:            hash,
		CompactRevision: compactRev,
		HashRevision:    rev,
	}, nil
}

// Hash hashes the whole store at its current revision.
func (s *maintenanceServer) Hash(ctx context.Context, r *pb.HashRequest) (*pb.HashResponse, error) {
	view := s.m.loop.view.Load()
	hash, _, err := view.HashKV(0)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.HashResponse{Header: s.m.header(&pb.ResponseHeader{Revision: view.Rev()}), Hash: hash}, nil
}

// Defragment succeeds at once: basalt's store frees what compaction drops
// as it goes, so there is never anything to defragment. Like etcd's, the
// answer has no header.
func (s *maintenanceServer) Defragment(ctx context.Context, r *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	return &pb.DefragmentResponse{}, nil
}
