package server

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/basaltdb/basalt/engine"
)

// Limits of auth at the door.
const (
	// passwordIterations is the PBKDF2-SHA256 work factor of a stored
	// password: about what etcd's default bcrypt cost (10) costs, tens of
	// milliseconds, paid once per user change and per Authenticate.
	passwordIterations = 100_000
	passwordSaltBytes  = 16
	passwordKeyBytes   = 32
	// tokensMax bounds the simple tokens a member holds; beyond it the
	// expired go, then some of the others (their holders authenticate
	// again).
	tokensMax = 1 << 20
	// authenticateAttemptsMax bounds the Authenticate proposals that find
	// the store changed since the password was checked.
	authenticateAttemptsMax = 3
	// tokenLetters is the length of a simple token's random part, etcd's.
	tokenLetters = 16
	// tokenTTLDefault is --auth-token-ttl's default, etcd's.
	tokenTTLDefault = 300 * time.Second
)

// authGRPCErrors map the auth store's errors to etcd's gRPC errors.
var authGRPCErrors = []struct {
	err  error
	grpc error
}{
	{engine.ErrRootUserNotExist, rpctypes.ErrGRPCRootUserNotExist},
	{engine.ErrRootRoleNotExist, rpctypes.ErrGRPCRootRoleNotExist},
	{engine.ErrUserAlreadyExist, rpctypes.ErrGRPCUserAlreadyExist},
	{engine.ErrUserEmpty, rpctypes.ErrGRPCUserEmpty},
	{engine.ErrUserNotFound, rpctypes.ErrGRPCUserNotFound},
	{engine.ErrRoleAlreadyExist, rpctypes.ErrGRPCRoleAlreadyExist},
	{engine.ErrRoleNotFound, rpctypes.ErrGRPCRoleNotFound},
	{engine.ErrRoleEmpty, rpctypes.ErrGRPCRoleEmpty},
	{engine.ErrPermissionNotGiven, rpctypes.ErrGRPCPermissionNotGiven},
	{engine.ErrPermissionDenied, rpctypes.ErrGRPCPermissionDenied},
	{engine.ErrRoleNotGranted, rpctypes.ErrGRPCRoleNotGranted},
	{engine.ErrPermissionNotGranted, rpctypes.ErrGRPCPermissionNotGranted},
	{engine.ErrInvalidAuthMgmt, rpctypes.ErrGRPCInvalidAuthMgmt},
	{engine.ErrAuthOldRevision, rpctypes.ErrGRPCAuthOldRevision},
	{engine.ErrAuthFailed, rpctypes.ErrGRPCAuthFailed},
	{engine.ErrAuthNotEnabled, rpctypes.ErrGRPCAuthNotEnabled},
}

// The auth errors join the core's in toGRPC's table; they live here so
// that auth stays in one file.
func init() {
	grpcErrors = append(grpcErrors, authGRPCErrors...)
}

// authInfo is who a request comes from: the user its token names and the
// auth revision the token was issued at.
type authInfo struct {
	user string
	rev  uint64
}

type authInfoKey struct{}

// authFromContext returns the authInfo the door attached to ctx, nil for
// a request that carries no token or when auth is disabled.
func authFromContext(ctx context.Context) *authInfo {
	ai, _ := ctx.Value(authInfoKey{}).(*authInfo)
	return ai
}

// opHeader is the header of a proposal made for ctx's user: apply checks
// the user and the revision of its token, as etcd's does.
func opHeader(ctx context.Context) *pb.RequestHeader {
	ai := authFromContext(ctx)
	if ai == nil {
		return nil
	}
	return &pb.RequestHeader{Username: ai.user, AuthRevision: ai.rev}
}

// token is a simple token's record.
type token struct {
	user string
	rev  uint64
	// expires is pushed back by every use, as etcd's simple tokens are.
	expires time.Time
}

// simpleTokens are etcd's --auth-token simple tokens: random strings this
// member issued, each naming a user and the auth revision it was issued
// at, expiring once unused for ttl.
type simpleTokens struct {
	ttl time.Duration
	mu  sync.Mutex
	// byToken holds the live tokens. Invariant: len(byToken) <= tokensMax.
	byToken map[string]*token
	next    uint64
}

// newTokenProvider makes the tokens --auth-token asks for.
func newTokenProvider(cfg *Config) (tokenProvider, error) {
	spec := cfg.AuthToken
	if spec == "" {
		spec = "simple"
	}
	o, err := parseAuthToken(spec)
	if err != nil {
		return nil, err
	}
	if o == nil {
		return newSimpleTokens(time.Duration(cfg.AuthTokenTTLSeconds) * time.Second), nil
	}
	return newJWTTokens(o)
}

func newSimpleTokens(ttl time.Duration) *simpleTokens {
	if ttl <= 0 {
		ttl = tokenTTLDefault
	}
	return &simpleTokens{ttl: ttl, byToken: map[string]*token{}}
}

// newToken makes a token to propose: random letters, and a counter
// that keeps this member's tokens apart, as etcd's "<letters>.<index>".
func (ts *simpleTokens) newToken() string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, tokenLetters)
	rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.next++
	return string(b) + "." + strconv.FormatUint(ts.next, 10)
}

// register holds the tokens applied Authenticate requests assigned, on
// every member. Past tokensMax, expired tokens are swept, then the tokens
// nearest their expiry make room.
func (ts *simpleTokens) register(assigned []engine.AssignedToken, now time.Time) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, a := range assigned {
		if len(ts.byToken) >= tokensMax {
			ts.makeRoom(now)
		}
		ts.byToken[a.Token] = &token{user: a.User, rev: a.Revision, expires: now.Add(ts.ttl)}
	}
}

// makeRoom drops the expired tokens, or else about a tenth of them, the
// first the map yields: every token then in use was renewed at most ttl
// ago, so none is favoured.
func (ts *simpleTokens) makeRoom(now time.Time) {
	for k, t := range ts.byToken {
		if now.After(t.expires) {
			delete(ts.byToken, k)
		}
	}
	for k := range ts.byToken {
		if len(ts.byToken) < tokensMax-tokensMax/10 {
			return
		}
		delete(ts.byToken, k)
	}
}

// lookup returns the live token tok, renewing it.
func (ts *simpleTokens) lookup(tok string, now time.Time) (token, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t := ts.byToken[tok]
	if t == nil {
		return token{}, false
	}
	if now.After(t.expires) {
		delete(ts.byToken, tok)
		return token{}, false
	}
	t.expires = now.Add(ts.ttl)
	return *t, true
}

// hashPassword hashes a password at the door, so that apply only stores
// the hash: "pbkdf2-sha256$iterations$salt$key", base64 (std, raw).
func hashPassword(password string) (string, error) {
	salt := make([]byte, passwordSaltBytes)
	rand.Read(salt)
	key, err := pbkdf2.Key(sha256.New, password, salt, passwordIterations, passwordKeyBytes)
	if err != nil {
		return "", err
	}
	enc := base64.RawStdEncoding
	return fmt.Sprintf("pbkdf2-sha256$%d$%s$%s", passwordIterations, enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// checkPassword reports whether password matches a hash of hashPassword.
func checkPassword(hash []byte, password string) bool {
	parts := strings.Split(string(hash), "$")
	if len(parts) != 4 || parts[0] != "pbkdf2-sha256" {
		return false
	}
	iter, err := strconv.Atoi(parts[1])
	if err != nil || iter <= 0 || iter > 10*passwordIterations {
		return false
	}
	enc := base64.RawStdEncoding
	salt, err1 := enc.DecodeString(parts[2])
	want, err2 := enc.DecodeString(parts[3])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got, err := pbkdf2.Key(sha256.New, password, salt, iter, len(want))
	return err == nil && subtle.ConstantTimeCompare(got, want) == 1
}

// authState is the auth store as last applied.
func (m *Member) authState() *engine.AuthState { return m.loop.status.Load().Auth }

// resolveToken returns who ctx's token names: nil with no token or with
// auth disabled (a token left over from before a disable is ignored), etcd's
// invalid auth token error for a token this member does not hold.
func (m *Member) resolveToken(ctx context.Context, st *engine.AuthState) (*authInfo, error) {
	if !st.Enabled {
		return nil, nil
	}
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return nil, nil
	}
	ts, ok := md[rpctypes.TokenFieldNameGRPC]
	if !ok {
		ts, ok = md[rpctypes.TokenFieldNameSwagger]
	}
	if !ok || len(ts) == 0 {
		return nil, nil
	}
	t, ok := m.tokens.lookup(ts[0], time.Now())
	if !ok || st.User(t.user) == nil {
		return nil, rpctypes.ErrGRPCInvalidAuthToken
	}
	return &authInfo{user: t.user, rev: t.rev}, nil
}

// authenticated fails a request with no user while auth is enabled.
func authenticated(st *engine.AuthState, ai *authInfo) error {
	if st.Enabled && ai == nil {
		return engine.ErrUserEmpty
	}
	return nil
}

func aiUser(ai *authInfo) (string, uint64) {
	if ai == nil {
		return "", 0
	}
	return ai.user, ai.rev
}

// isAdmin is etcd's IsAdminPermitted for ai.
func isAdmin(st *engine.AuthState, ai *authInfo) error {
	user, _ := aiUser(ai)
	return st.IsAdmin(user)
}

// permitted checks ai may do t on [key, end).
func permitted(st *engine.AuthState, ai *authInfo, key, end []byte, t authpb.Permission_Type) error {
	user, rev := aiUser(ai)
	return st.IsPermitted(user, rev, key, end, t)
}

// authUnary resolves the request's token and checks, at the door, that
// its user may make the request, as etcd checks each RPC. The auth
// service's own requests are checked at apply.
func (m *Member) authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if _, ok := req.(*pb.AuthenticateRequest); ok {
		return handler(ctx, req)
	}
	st := m.authState()
	ai, err := m.resolveToken(ctx, st)
	if err != nil {
		return nil, err
	}
	if ai != nil {
		ctx = context.WithValue(ctx, authInfoKey{}, ai)
	}
	if st.Enabled {
		if err := m.checkRequest(ctx, st, ai, req); err != nil {
			return nil, toGRPC(err)
		}
	}
	return handler(ctx, req)
}

// checkRequest is etcd's check of what each RPC needs with auth enabled.
func (m *Member) checkRequest(ctx context.Context, st *engine.AuthState, ai *authInfo, req any) error {
	switch r := req.(type) {
	case *pb.RangeRequest:
		return permitted(st, ai, r.Key, r.RangeEnd, authpb.READ)
	case *pb.PutRequest:
		return checkPutAuth(st, ai, r)
	case *pb.DeleteRangeRequest:
		return checkDeleteAuth(st, ai, r)
	case *pb.TxnRequest:
		return checkTxnAuth(st, ai, r)
	case *pb.CompactionRequest, *pb.HashKVRequest, *pb.HashRequest, *pb.DefragmentRequest,
		*pb.MoveLeaderRequest, *pb.DowngradeRequest,
		*pb.MemberAddRequest, *pb.MemberRemoveRequest, *pb.MemberUpdateRequest, *pb.MemberPromoteRequest:
		return isAdmin(st, ai)
	case *pb.AlarmRequest:
		if r.Action == pb.AlarmRequest_GET {
			return authenticated(st, ai)
		}
		return isAdmin(st, ai)
	case *pb.StatusRequest, *pb.MemberListRequest, *pb.LeaseGrantRequest:
		return authenticated(st, ai)
	case *pb.LeaseRevokeRequest:
		return m.checkLeaseKeys(ctx, st, ai, []int64{r.ID}, authpb.WRITE)
	case *pb.LeaseTimeToLiveRequest:
		if !r.Keys {
			return authenticated(st, ai)
		}
		return m.checkLeaseKeys(ctx, st, ai, []int64{r.ID}, authpb.READ)
	case *pb.LeaseLeasesRequest:
		var ids []int64
		if err := m.loop.call(ctx, func(n *engine.Node) { ids = n.Leases() }); err != nil {
			return err
		}
		return m.checkLeaseKeys(ctx, st, ai, ids, authpb.READ)
	}
	return nil
}

// checkLeaseKeys checks that ai may do t on every key attached to the
// leases ids: revoking deletes them, reading a lease shows them.
func (m *Member) checkLeaseKeys(ctx context.Context, st *engine.AuthState, ai *authInfo, ids []int64, t authpb.Permission_Type) error {
	if err := authenticated(st, ai); err != nil {
		return err
	}
	if isAdmin(st, ai) == nil {
		return nil
	}
	var keys [][]byte
	if err := m.loop.call(ctx, func(n *engine.Node) {
		for _, id := range ids {
			keys = append(keys, n.LeaseKeys(id)...)
		}
	}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := permitted(st, ai, k, nil, t); err != nil {
			return err
		}
	}
	return nil
}

func checkPutAuth(st *engine.AuthState, ai *authInfo, r *pb.PutRequest) error {
	if err := permitted(st, ai, r.Key, nil, authpb.WRITE); err != nil {
		return err
	}
	if r.PrevKv {
		return permitted(st, ai, r.Key, nil, authpb.READ)
	}
	return nil
}

func checkDeleteAuth(st *engine.AuthState, ai *authInfo, r *pb.DeleteRangeRequest) error {
	if err := permitted(st, ai, r.Key, r.RangeEnd, authpb.WRITE); err != nil {
		return err
	}
	if r.PrevKv {
		return permitted(st, ai, r.Key, r.RangeEnd, authpb.READ)
	}
	return nil
}

// checkTxnAuth is etcd's CheckTxnAuth: read on every compare, and every
// operation of both branches, nested txns included.
func checkTxnAuth(st *engine.AuthState, ai *authInfo, r *pb.TxnRequest) error {
	for _, c := range r.Compare {
		if err := permitted(st, ai, c.Key, c.RangeEnd, authpb.READ); err != nil {
			return err
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			var err error
			switch v := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				err = permitted(st, ai, v.RequestRange.Key, v.RequestRange.RangeEnd, authpb.READ)
			case *pb.RequestOp_RequestPut:
				err = checkPutAuth(st, ai, v.RequestPut)
			case *pb.RequestOp_RequestDeleteRange:
				err = checkDeleteAuth(st, ai, v.RequestDeleteRange)
			case *pb.RequestOp_RequestTxn:
				err = checkTxnAuth(st, ai, v.RequestTxn)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// streamAdminMethods and streamUserMethods are the streaming RPCs that
// need the root role, or any user, while auth is enabled. Watch checks
// each watch it creates.
var (
	streamAdminMethods = map[string]bool{snapshotMethod: true}
	streamUserMethods  = map[string]bool{"/etcdserverpb.Lease/LeaseKeepAlive": true}
)

// authStream resolves a stream's token and checks what the stream needs.
func (m *Member) authStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	st := m.authState()
	if !st.Enabled || (!streamAdminMethods[info.FullMethod] && !streamUserMethods[info.FullMethod]) {
		return handler(srv, ss)
	}
	ai, err := m.resolveToken(ss.Context(), st)
	if err != nil {
		return err
	}
	if streamAdminMethods[info.FullMethod] {
		err = isAdmin(st, ai)
	} else {
		err = authenticated(st, ai)
	}
	if err != nil {
		return toGRPC(err)
	}
	return handler(srv, ss)
}

// watchDenied is why a watch may not be created on ctx's stream, as
// etcd's watch server words it in the cancel reason; "" if it may.
func (m *Member) watchDenied(ctx context.Context, r *pb.WatchCreateRequest) string {
	st := m.authState()
	if !st.Enabled {
		return ""
	}
	ai, err := m.resolveToken(ctx, st)
	if err != nil {
		return rpctypes.ErrGRPCInvalidAuthToken.Error()
	}
	switch err := permitted(st, ai, r.Key, r.RangeEnd, authpb.READ); err {
	case nil:
		return ""
	case engine.ErrAuthOldRevision:
		return rpctypes.ErrGRPCAuthOldRevision.Error()
	case engine.ErrUserEmpty:
		return rpctypes.ErrGRPCUserEmpty.Error()
	default:
		return rpctypes.ErrGRPCPermissionDenied.Error()
	}
}

// authServer serves etcd's Auth service.
type authServer struct {
	pb.UnimplementedAuthServer
	m *Member
}

// Authenticate checks a password at the door, as etcd does, against the
// auth store as of a linearizable read. A JWT is signed here; a simple
// token is proposed through raft with the store's revision, so that every
// member holds it and the password checked is still the user's when it
// applies; a token is bound to that revision: a later change to the store
// makes it old, and its holder authenticates again.
func (s *authServer) Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	for range authenticateAttemptsMax {
		if err := s.m.readBarrier(ctx); err != nil {
			return nil, err
		}
		st := s.m.authState()
		if !st.Enabled {
			return nil, rpctypes.ErrGRPCAuthNotEnabled
		}
		u := st.User(r.Name)
		if u == nil || u.GetOptions().GetNoPassword() || !checkPassword(u.Password, r.Password) {
			return nil, rpctypes.ErrGRPCAuthFailed
		}
		hdr := s.m.header(&pb.ResponseHeader{Revision: s.m.loop.view.Load().Rev()})
		switch ts := s.m.tokens.(type) {
		case *jwtTokens:
			tok, err := ts.assign(r.Name, st.Revision, time.Now())
			if err != nil {
				return nil, err
			}
			return &pb.AuthenticateResponse{Header: hdr, Token: tok}, nil
		case *simpleTokens:
			op := &pb.InternalRaftRequest{
				Header:       &pb.RequestHeader{AuthRevision: st.Revision},
				Authenticate: &pb.InternalAuthenticateRequest{Name: r.Name, SimpleToken: ts.newToken()},
			}
			res, err := s.m.propose(ctx, op)
			if errors.Is(err, rpctypes.ErrGRPCAuthOldRevision) {
				continue
			}
			if err != nil {
				return nil, err
			}
			resp := res.(*pb.AuthenticateResponse)
			s.m.header(resp.Header)
			return resp, nil
		}
	}
	return nil, rpctypes.ErrGRPCAuthOldRevision
}

// authOp proposes an auth store request for ctx's user and returns its
// response, with the member's header.
func authOp[R interface{ GetHeader() *pb.ResponseHeader }](ctx context.Context, m *Member, op *pb.InternalRaftRequest) (R, error) {
	var zero R
	op.Header = opHeader(ctx)
	res, err := m.propose(ctx, op)
	if err != nil {
		return zero, err
	}
	resp := res.(R)
	m.header(resp.GetHeader())
	return resp, nil
}

func (s *authServer) AuthEnable(ctx context.Context, r *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error) {
	return authOp[*pb.AuthEnableResponse](ctx, s.m, &pb.InternalRaftRequest{AuthEnable: r})
}

func (s *authServer) AuthDisable(ctx context.Context, r *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error) {
	return authOp[*pb.AuthDisableResponse](ctx, s.m, &pb.InternalRaftRequest{AuthDisable: r})
}

func (s *authServer) AuthStatus(ctx context.Context, r *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	return authOp[*pb.AuthStatusResponse](ctx, s.m, &pb.InternalRaftRequest{AuthStatus: r})
}

func (s *authServer) UserAdd(ctx context.Context, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	if !r.GetOptions().GetNoPassword() {
		hash, err := hashPassword(r.Password)
		if err != nil {
			return nil, err
		}
		r = &pb.AuthUserAddRequest{Name: r.Name, HashedPassword: hash, Options: r.Options}
	}
	return authOp[*pb.AuthUserAddResponse](ctx, s.m, &pb.InternalRaftRequest{AuthUserAdd: r})
}

func (s *authServer) UserGet(ctx context.Context, r *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error) {
	return authOp[*pb.AuthUserGetResponse](ctx, s.m, &pb.InternalRaftRequest{AuthUserGet: r})
}

func (s *authServer) UserList(ctx context.Context, r *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error) {
	return authOp[*pb.AuthUserListResponse](ctx, s.m, &pb.InternalRaftRequest{AuthUserList: r})
}

func (s *authServer) UserDelete(ctx context.Context, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	return authOp[*pb.AuthUserDeleteResponse](ctx, s.m, &pb.InternalRaftRequest{AuthUserDelete: r})
}

func (s *authServer) UserChangePassword(ctx context.Context, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	hash, err := hashPassword(r.Password)
	if err != nil {
		return nil, err
	}
	r = &pb.AuthUserChangePasswordRequest{Name: r.Name, HashedPassword: hash}
	return authOp[*pb.AuthUserChangePasswordResponse](ctx, s.m, &pb.InternalRaftRequest{AuthUserChangePassword: r})
}

func (s *authServer) UserGrantRole(ctx context.Context, r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	return authOp[*pb.AuthUserGrantRoleResponse](ctx, s.m, &pb.InternalRaftRequest{AuthUserGrantRole: r})
}

func (s *authServer) UserRevokeRole(ctx context.Context, r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	return authOp[*pb.AuthUserRevokeRoleResponse](ctx, s.m, &pb.InternalRaftRequest{AuthUserRevokeRole: r})
}

func (s *authServer) RoleAdd(ctx context.Context, r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	return authOp[*pb.AuthRoleAddResponse](ctx, s.m, &pb.InternalRaftRequest{AuthRoleAdd: r})
}

func (s *authServer) RoleGet(ctx context.Context, r *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error) {
	return authOp[*pb.AuthRoleGetResponse](ctx, s.m, &pb.InternalRaftRequest{AuthRoleGet: r})
}

func (s *authServer) RoleList(ctx context.Context, r *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error) {
	return authOp[*pb.AuthRoleListResponse](ctx, s.m, &pb.InternalRaftRequest{AuthRoleList: r})
}

func (s *authServer) RoleDelete(ctx context.Context, r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	return authOp[*pb.AuthRoleDeleteResponse](ctx, s.m, &pb.InternalRaftRequest{AuthRoleDelete: r})
}

func (s *authServer) RoleGrantPermission(ctx context.Context, r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	return authOp[*pb.AuthRoleGrantPermissionResponse](ctx, s.m, &pb.InternalRaftRequest{AuthRoleGrantPermission: r})
}

func (s *authServer) RoleRevokePermission(ctx context.Context, r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	return authOp[*pb.AuthRoleRevokePermissionResponse](ctx, s.m, &pb.InternalRaftRequest{AuthRoleRevokePermission: r})
}
