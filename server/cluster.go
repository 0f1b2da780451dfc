package server

import (
	"context"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/basaltdb/basalt/engine"
)

// healthInterval is etcd's HealthInterval: with --strict-reconfig-check, a
// reconfiguration needs the peers it counts on to have been connected for
// at least this long.
const healthInterval = 5 * time.Second

// errLeaderTransferTimeout is etcd's ErrTimeoutLeaderTransfer, which its
// gRPC layer passes through as codes.Unknown.
var errLeaderTransferTimeout = status.Error(codes.Unknown, "etcdserver: request timed out, leader transfer took too long")

func (s *clusterServer) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	if r.Linearizable {
		if err := s.m.readBarrier(ctx); err != nil {
			return nil, toGRPC(err)
		}
	}
	return &pb.MemberListResponse{Header: s.m.header(nil), Members: s.m.loop.status.Load().Members}, nil
}

func (s *clusterServer) MemberAdd(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	urls, err := checkPeerURLs(r.PeerURLs)
	if err != nil {
		return nil, err
	}
	id := addedMemberID(urls, time.Now())
	if err := s.m.mayAddMember(r.IsLearner); err != nil {
		return nil, err
	}
	typ := raftpb.ConfChangeAddNode
	if r.IsLearner {
		typ = raftpb.ConfChangeAddLearnerNode
	}
	added := &pb.Member{ID: id, PeerURLs: urls, IsLearner: r.IsLearner}
	list, err := s.m.confChange(ctx, &raftpb.ConfChange{Type: &typ, NodeId: new(id), Context: engine.EncodeMember(added)})
	if err != nil {
		return nil, err
	}
	return &pb.MemberAddResponse{Header: s.m.header(nil), Member: added, Members: list}, nil
}

func (s *clusterServer) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	if err := s.m.mayRemoveMember(r.ID); err != nil {
		return nil, err
	}
	typ := raftpb.ConfChangeRemoveNode
	list, err := s.m.confChange(ctx, &raftpb.ConfChange{Type: &typ, NodeId: new(r.ID)})
	if err != nil {
		return nil, err
	}
	return &pb.MemberRemoveResponse{Header: s.m.header(nil), Members: list}, nil
}

func (s *clusterServer) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	urls, err := checkPeerURLs(r.PeerURLs)
	if err != nil {
		return nil, err
	}
	typ := raftpb.ConfChangeUpdateNode
	ctxt := engine.EncodeMember(&pb.Member{ID: r.ID, PeerURLs: urls})
	list, err := s.m.confChange(ctx, &raftpb.ConfChange{Type: &typ, NodeId: new(r.ID), Context: ctxt})
	if err != nil {
		return nil, err
	}
	return &pb.MemberUpdateResponse{Header: s.m.header(nil), Members: list}, nil
}

func (s *clusterServer) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	list, err := s.m.promote(ctx, r.ID)
	if errors.Is(err, engine.ErrNotLeader) {
		list, err = s.m.forwardPromote(ctx, r.ID)
	}
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.MemberPromoteResponse{Header: s.m.header(nil), Members: list}, nil
}

// checkPeerURLs parses a member's peer URLs as etcd's types.NewURLs does.
func checkPeerURLs(us []string) ([]string, error) {
	if len(us) == 0 {
		return nil, rpctypes.ErrGRPCMemberBadURLs
	}
	out := make([]string, len(us))
	for i, s := range us {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "unix" && u.Scheme != "unixs") || u.Host == "" || u.Path != "" {
			return nil, rpctypes.ErrGRPCMemberBadURLs
		}
		out[i] = u.String()
	}
	sort.Strings(out)
	return out, nil
}

// addedMemberID is the ID etcd gives a member added at now: sha1 of its
// sorted peer URLs and the time in seconds.
func addedMemberID(peerURLs []string, now time.Time) uint64 {
	us := append([]string(nil), peerURLs...)
	sort.Strings(us)
	sum := sha1.Sum([]byte(strings.Join(us, "") + strconv.FormatInt(now.Unix(), 10)))
	return binary.BigEndian.Uint64(sum[:8])
}

// confChange proposes cc and returns the members after it applied.
func (m *Member) confChange(ctx context.Context, cc *raftpb.ConfChange) ([]*pb.Member, error) {
	resp, err := m.loop.do(ctx, engine.Request{ConfChange: cc})
	if err != nil {
		return nil, toGRPC(err)
	}
	return resp.Result.(*pb.MemberListResponse).Members, nil
}

// connectedSince counts the members of ms this member has had a stream to
// since t, itself included (etcd's numConnectedSince).
func (m *Member) connectedSince(t time.Time, ms []*pb.Member) int {
	n := 0
	for _, mb := range ms {
		if since := m.tr.activeSince(mb.ID); mb.ID == m.memberID || (!since.IsZero() && since.Before(t)) {
			n++
		}
	}
	return n
}

func votingMembers(ms []*pb.Member) []*pb.Member {
	var out []*pb.Member
	for _, mb := range ms {
		if !mb.IsLearner {
			out = append(out, mb)
		}
	}
	return out
}

// started counts the members that have published their attributes.
func started(ms []*pb.Member, except uint64) int {
	n := 0
	for _, mb := range ms {
		if mb.Name != "" && mb.ID != except {
			n++
		}
	}
	return n
}

// mayAddMember is etcd's check that adding a member keeps a quorum.
func (m *Member) mayAddMember(learner bool) error {
	if !m.cfg.StrictReconfig {
		return nil
	}
	voters := votingMembers(m.loop.status.Load().Members)
	if nstarted, nmembers := started(voters, 0), len(voters)+1; !learner && !(nstarted == 1 && nmembers == 2) && nstarted < nmembers/2+1 {
		return rpctypes.ErrGRPCMemberNotEnoughStarted
	}
	if len(voters) > 1 && m.connectedSince(time.Now().Add(-healthInterval), voters) < (len(voters)+1)/2+1 {
		return rpctypes.ErrGRPCUnhealthy
	}
	return nil
}

// mayRemoveMember is etcd's check that removing member id keeps a quorum.
func (m *Member) mayRemoveMember(id uint64) error {
	if !m.cfg.StrictReconfig {
		return nil
	}
	ms := m.loop.status.Load().Members
	for _, mb := range ms {
		if mb.ID == id && mb.IsLearner {
			return nil
		}
	}
	voters := votingMembers(ms)
	nmembers := 0
	for _, mb := range voters {
		if mb.ID != id {
			nmembers++
		}
	}
	if started(voters, id) < nmembers/2+1 {
		return rpctypes.ErrGRPCMemberNotEnoughStarted
	}
	if id != m.memberID && m.tr.activeSince(id).IsZero() {
		return nil // a member that is down is not part of the active quorum
	}
	if active := m.connectedSince(time.Now().Add(-healthInterval), voters); active-1 < 1+(len(voters)-1)/2 {
		return rpctypes.ErrGRPCUnhealthy
	}
	return nil
}

// promote promotes learner id if this member leads and the learner has
// caught up; engine.ErrNotLeader means the leader must be asked.
func (m *Member) promote(ctx context.Context, id uint64) ([]*pb.Member, error) {
	var ready error
	if err := m.loop.call(ctx, func(n *engine.Node) { ready = n.LearnerReady(id) }); err != nil {
		return nil, err
	}
	if ready != nil {
		return nil, ready
	}
	if m.cfg.StrictReconfig {
		voters := votingMembers(m.loop.status.Load().Members)
		if nstarted, nmembers := started(voters, 0)+1, len(voters)+1; nstarted < nmembers/2+1 {
			return nil, rpctypes.ErrGRPCMemberNotEnoughStarted
		}
	}
	typ := raftpb.ConfChangeAddNode
	resp, err := m.loop.do(ctx, engine.Request{ConfChange: &raftpb.ConfChange{Type: &typ, NodeId: new(id), Context: engine.PromoteContext}})
	if err != nil {
		return nil, err
	}
	return resp.Result.(*pb.MemberListResponse).Members, nil
}

// forwardPromote asks the leader to promote learner id.
func (m *Member) forwardPromote(ctx context.Context, id uint64) ([]*pb.Member, error) {
	var resp pb.MemberListResponse
	if err := m.forward(ctx, peerPromotePath, &pb.MemberPromoteRequest{ID: id}, &resp); err != nil {
		return nil, err
	}
	return resp.Members, nil
}

// memberListBytesMax bounds a members list read from a peer.
const memberListBytesMax = 16 << 20

// serveMembers answers the members table and the cluster ID, for a member
// joining the cluster, which does not know the ID yet.
func (t *transport) serveMembers(w http.ResponseWriter, r *http.Request) {
	st := t.loop.status.Load()
	b, err := protojson.Marshal(&pb.MemberListResponse{Header: &pb.ResponseHeader{ClusterId: t.clusterID, MemberId: t.self}, Members: st.Members})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// fetchMembers asks the member at peerURL for the members table.
func fetchMembers(peerURL string) (*pb.MemberListResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), peerRequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(peerURL, "/")+peerMembersPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, memberListBytesMax))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s: %s", peerURL, resp.Status, body)
	}
	var list pb.MemberListResponse
	if err := protojson.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("%s answered a bad members list: %w", peerURL, err)
	}
	return &list, nil
}

// MoveLeader hands leadership to a voting member; only the leader may.
func (s *maintenanceServer) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	st := s.m.loop.status.Load()
	if st.Leader != s.m.memberID {
		return nil, rpctypes.ErrGRPCNotLeader
	}
	voter := false
	for _, mb := range st.Members {
		if mb.ID == r.TargetID && !mb.IsLearner {
			voter = true
		}
	}
	if !voter {
		return nil, rpctypes.ErrGRPCBadLeaderTransferee
	}
	start := time.Now()
	s.m.lg.Info("leadership transfer starting", zap.String("local-member-id", idString(s.m.memberID)), zap.String("transferee-member-id", idString(r.TargetID)))
	if err := s.m.loop.call(ctx, func(n *engine.Node) { n.TransferLeader(r.TargetID) }); err != nil {
		return nil, toGRPC(err)
	}
	for s.m.loop.status.Load().Leader != r.TargetID {
		select {
		case <-ctx.Done():
			return nil, errLeaderTransferTimeout
		case <-time.After(s.m.cfg.HeartbeatInterval):
		}
	}
	s.m.lg.Info("leadership transfer finished", zap.String("new-leader-member-id", idString(r.TargetID)), zap.Duration("took", time.Since(start)))
	return &pb.MoveLeaderResponse{}, nil
}

// isLearner reports whether this member is a learner in the members table.
func (m *Member) isLearner() bool {
	for _, mb := range m.loop.status.Load().Members {
		if mb.ID == m.memberID {
			return mb.IsLearner
		}
	}
	return false
}

// snapshotMethod is the one streaming RPC a learner serves.
const snapshotMethod = "/etcdserverpb.Maintenance/Snapshot"

// learnerUnary refuses, on a learner, every unary RPC but Status and
// serializable Range, as etcd does.
func (m *Member) learnerUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if m.isLearner() {
		switch r := req.(type) {
		case *pb.StatusRequest:
		case *pb.RangeRequest:
			if !r.Serializable {
				return nil, rpctypes.ErrGRPCNotSupportedForLearner
			}
		default:
			return nil, rpctypes.ErrGRPCNotSupportedForLearner
		}
	}
	return handler(ctx, req)
}

// learnerStream refuses, on a learner, every streaming RPC but Snapshot.
func (m *Member) learnerStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if m.isLearner() && info.FullMethod != snapshotMethod {
		return rpctypes.ErrGRPCNotSupportedForLearner
	}
	return handler(srv, ss)
}

// proposeError is the gRPC error for a proposal or read that failed after
// start: a timeout says, as etcd's does, whether a leader election or a
// lost connection is the likely cause.
func (m *Member) proposeError(err error, start time.Time) error {
	if !errors.Is(err, engine.ErrTimeout) {
		return toGRPC(err)
	}
	elected := time.Unix(0, m.loop.leaderSince.Load())
	if prevLost := elected.Add(-2 * m.cfg.ElectionTimeout); start.After(prevLost) && start.Before(elected) {
		return rpctypes.ErrGRPCTimeoutDueToLeaderFail
	}
	st := m.loop.status.Load()
	switch st.Leader {
	case 0:
	case m.memberID:
		if voters := votingMembers(st.Members); m.connectedSince(start, voters) < len(voters)/2+1 {
			return rpctypes.ErrGRPCTimeoutDueToConnectionLost
		}
	default:
		if since := m.tr.activeSince(st.Leader); since.IsZero() || since.After(start) {
			return rpctypes.ErrGRPCTimeoutDueToConnectionLost
		}
	}
	return rpctypes.ErrGRPCTimeout
}
