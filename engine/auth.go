package engine

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"slices"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// Errors of the auth store, etcd's; the server maps them to etcd's gRPC
// errors by identity.
var (
	ErrRootUserNotExist     = errors.New("engine: root user does not exist")
	ErrRootRoleNotExist     = errors.New("engine: root user does not have root role")
	ErrUserAlreadyExist     = errors.New("engine: user name already exists")
	ErrUserEmpty            = errors.New("engine: user name is empty")
	ErrUserNotFound         = errors.New("engine: user name not found")
	ErrRoleAlreadyExist     = errors.New("engine: role name already exists")
	ErrRoleNotFound         = errors.New("engine: role name not found")
	ErrRoleEmpty            = errors.New("engine: role name is empty")
	ErrPermissionNotGiven   = errors.New("engine: permission not given")
	ErrPermissionDenied     = errors.New("engine: permission denied")
	ErrRoleNotGranted       = errors.New("engine: role is not granted to the user")
	ErrPermissionNotGranted = errors.New("engine: permission is not granted to the role")
	ErrInvalidAuthMgmt      = errors.New("engine: invalid auth management")
	ErrAuthOldRevision      = errors.New("engine: revision of auth store is old")
	ErrAuthFailed           = errors.New("engine: authentication failed, invalid user ID or password")
	ErrAuthNotEnabled       = errors.New("engine: authentication is not enabled")
)

// AssignedToken is a simple auth token an applied Authenticate assigned:
// it names User, at the auth Revision of the store when it applied.
type AssignedToken struct {
	Token    string
	User     string
	Revision uint64
}

// RootName is the name of etcd's root user and of its root role, which
// grants every permission.
const RootName = "root"

// AuthState is the auth store at one applied index: users, roles, whether
// auth is enabled and the auth revision. A published AuthState is never
// modified: apply makes a new one for every change, so the server reads
// it from any goroutine.
type AuthState struct {
	Enabled bool
	// Revision is bumped by every change to the store.
	// Invariant: Revision >= 1.
	Revision uint64
	// users and roles are keyed by name; their values are never modified.
	// Invariant: a role a user holds exists, except the root role, which
	// may be granted before it is added (as etcd allows).
	users map[string]*authpb.User
	roles map[string]*authpb.Role
}

// newAuthState is the store of a new cluster: auth disabled, revision 1
// (etcd commits revision 1 when it creates its store).
func newAuthState() *AuthState {
	return &AuthState{Revision: 1, users: map[string]*authpb.User{}, roles: map[string]*authpb.Role{}}
}

// isDefault reports whether a is the store of a new cluster; a snapshot
// leaves such a store out.
func (a *AuthState) isDefault() bool {
	return !a.Enabled && a.Revision == 1 && len(a.users) == 0 && len(a.roles) == 0
}

// User returns the user named name, nil if there is none; the caller must
// not modify it.
func (a *AuthState) User(name string) *authpb.User { return a.users[name] }

// hasRootRole reports whether u holds the root role.
func hasRootRole(u *authpb.User) bool {
	return slices.Contains(u.Roles, RootName)
}

// UserHasRole reports whether user name holds role.
func (a *AuthState) UserHasRole(name, role string) bool {
	u := a.users[name]
	return u != nil && slices.Contains(u.Roles, role)
}

// IsAdmin says whether user name may manage the cluster (etcd's
// IsAdminPermitted): anyone while auth is disabled, else only a user with
// the root role.
func (a *AuthState) IsAdmin(name string) error {
	if !a.Enabled {
		return nil
	}
	if name == "" {
		return ErrUserEmpty
	}
	u := a.users[name]
	if u == nil {
		return ErrUserNotFound
	}
	if !hasRootRole(u) {
		return ErrPermissionDenied
	}
	return nil
}

// IsPermitted says whether user name, holding a token issued at auth
// revision rev, may do t on the keys [key, end) (etcd's isOpPermitted):
// end empty names the single key, end "\x00" every key from key on.
func (a *AuthState) IsPermitted(name string, rev uint64, key, end []byte, t authpb.Permission_Type) error {
	if !a.Enabled {
		return nil
	}
	if rev == 0 {
		return ErrUserEmpty
	}
	if rev < a.Revision {
		return ErrAuthOldRevision
	}
	u := a.users[name]
	if u == nil {
		return ErrPermissionDenied
	}
	if hasRootRole(u) || a.covered(u, key, end, t) {
		return nil
	}
	return ErrPermissionDenied
}

// interval is [begin, end) over keys; a nil end is past every key.
type interval struct{ begin, end []byte }

// endLess orders interval ends, nil being the greatest.
func endCompare(x, y []byte) int {
	switch {
	case x == nil && y == nil:
		return 0
	case x == nil:
		return 1
	case y == nil:
		return -1
	}
	return bytes.Compare(x, y)
}

// permInterval is the interval a permission (or a request) names: a point
// when end is empty, every key from key on when end is "\x00".
func permInterval(key, end []byte) interval {
	switch {
	case len(end) == 0:
		return interval{begin: key, end: append(slices.Clone(key), 0)}
	case len(end) == 1 && end[0] == 0:
		return interval{begin: key}
	}
	return interval{begin: key, end: end}
}

// covered reports whether the union of u's permissions granting t covers
// [key, end), as etcd's range permission cache decides it.
func (a *AuthState) covered(u *authpb.User, key, end []byte, t authpb.Permission_Type) bool {
	var ivs []interval
	for _, rn := range u.Roles {
		r := a.roles[rn]
		if r == nil {
			continue
		}
		for _, p := range r.KeyPermission {
			if p.PermType == authpb.READWRITE || p.PermType == t {
				ivs = append(ivs, permInterval(p.Key, p.RangeEnd))
			}
		}
	}
	slices.SortFunc(ivs, func(x, y interval) int { return bytes.Compare(x.begin, y.begin) })
	want := permInterval(key, end)
	cur := want.begin
	for _, iv := range ivs {
		if bytes.Compare(iv.begin, cur) > 0 {
			break
		}
		if endCompare(iv.end, cur) > 0 {
			cur = iv.end
		}
		if cur == nil || endCompare(cur, want.end) >= 0 {
			return true
		}
	}
	return false
}

// UserNames returns the users' names, sorted.
func (a *AuthState) UserNames() []string { return slices.Sorted(maps.Keys(a.users)) }

// RoleNames returns the roles' names, sorted.
func (a *AuthState) RoleNames() []string { return slices.Sorted(maps.Keys(a.roles)) }

// clone returns a copy of a whose maps may be changed; the users and roles
// they hold are shared and must be replaced, never modified.
func (a *AuthState) clone() *AuthState {
	return &AuthState{Enabled: a.Enabled, Revision: a.Revision, users: maps.Clone(a.users), roles: maps.Clone(a.roles)}
}

// isAuthRequest reports whether req is for the auth store.
func isAuthRequest(req *pb.InternalRaftRequest) bool {
	return req.Authenticate != nil || req.AuthEnable != nil || req.AuthDisable != nil || req.AuthStatus != nil ||
		req.AuthUserAdd != nil || req.AuthUserDelete != nil || req.AuthUserChangePassword != nil ||
		req.AuthUserGrantRole != nil || req.AuthUserGet != nil || req.AuthUserRevokeRole != nil ||
		req.AuthUserList != nil || req.AuthRoleAdd != nil || req.AuthRoleDelete != nil ||
		req.AuthRoleGrantPermission != nil || req.AuthRoleGet != nil || req.AuthRoleRevokePermission != nil ||
		req.AuthRoleList != nil
}

// checkAuthRevision fails a request made with a token older than the
// store, as etcd does at apply: the permissions checked at the door may
// have changed since. Requests with no user (the server's own: lease
// expiry, compaction) are not checked.
func (n *Node) checkAuthRevision(h *pb.RequestHeader) error {
	if n.auth.Enabled && h.GetUsername() != "" && h.GetAuthRevision() < n.auth.Revision {
		return ErrAuthOldRevision
	}
	return nil
}

// applyAuth applies a request to the auth store, checking as etcd does
// that the user in its header may make it.
func (n *Node) applyAuth(req *pb.InternalRaftRequest) (proto.Message, error) {
	user := req.GetHeader().GetUsername()
	admin := n.auth.IsAdmin(user)
	hdr := &pb.ResponseHeader{Revision: n.store.Rev()}
	switch {
	case req.Authenticate != nil:
		return n.applyAuthenticate(req.Authenticate, req.GetHeader().GetAuthRevision(), hdr)
	case req.AuthStatus != nil:
		// Anyone may ask, as in etcd.
		return &pb.AuthStatusResponse{Header: hdr, Enabled: n.auth.Enabled, AuthRevision: n.auth.Revision}, nil
	case req.AuthUserGet != nil:
		// A user may read itself.
		if admin != nil && req.AuthUserGet.Name != user {
			return nil, admin
		}
		u := n.auth.users[req.AuthUserGet.Name]
		if u == nil {
			return nil, ErrUserNotFound
		}
		return &pb.AuthUserGetResponse{Header: hdr, Roles: slices.Clone(u.Roles)}, nil
	case req.AuthRoleGet != nil:
		// A user may read the roles it holds.
		if admin != nil && !n.auth.UserHasRole(user, req.AuthRoleGet.Role) {
			return nil, admin
		}
		r := n.auth.roles[req.AuthRoleGet.Role]
		if r == nil {
			return nil, ErrRoleNotFound
		}
		if req.AuthRoleGet.Role == RootName {
			return &pb.AuthRoleGetResponse{Header: hdr, Perm: []*authpb.Permission{{PermType: authpb.READWRITE, Key: []byte{}, RangeEnd: []byte{0}}}}, nil
		}
		return &pb.AuthRoleGetResponse{Header: hdr, Perm: r.KeyPermission}, nil
	}
	if admin != nil {
		return nil, admin
	}
	next := n.auth.clone()
	res, err := next.apply(req, hdr)
	if err == nil && (next.Revision != n.auth.Revision || next.Enabled != n.auth.Enabled) {
		n.auth = next
	}
	return res, err
}

// applyAuthenticate assigns a simple token to a user whose password the
// server checked against the store at auth revision checked: a store that
// changed since (a new password) fails it, and the server checks again.
func (n *Node) applyAuthenticate(r *pb.InternalAuthenticateRequest, checked uint64, hdr *pb.ResponseHeader) (proto.Message, error) {
	if !n.auth.Enabled {
		return nil, ErrAuthNotEnabled
	}
	u := n.auth.users[r.Name]
	if u == nil || u.GetOptions().GetNoPassword() || r.SimpleToken == "" {
		return nil, ErrAuthFailed
	}
	if checked != n.auth.Revision {
		return nil, ErrAuthOldRevision
	}
	n.tokens = append(n.tokens, AssignedToken{Token: r.SimpleToken, User: r.Name, Revision: n.auth.Revision})
	return &pb.AuthenticateResponse{Header: hdr, Token: r.SimpleToken}, nil
}

// apply applies an auth management request to a, a private clone; a
// request that changes a bumps its revision.
func (a *AuthState) apply(req *pb.InternalRaftRequest, hdr *pb.ResponseHeader) (proto.Message, error) {
	switch {
	case req.AuthEnable != nil:
		if a.Enabled {
			return &pb.AuthEnableResponse{Header: hdr}, nil
		}
		root := a.users[RootName]
		if root == nil {
			return nil, ErrRootUserNotExist
		}
		if !hasRootRole(root) {
			return nil, ErrRootRoleNotExist
		}
		// etcd's enable leaves the revision: no token can predate it.
		a.Enabled = true
		return &pb.AuthEnableResponse{Header: hdr}, nil
	case req.AuthDisable != nil:
		if a.Enabled {
			a.Enabled = false
			a.Revision++
		}
		return &pb.AuthDisableResponse{Header: hdr}, nil
	case req.AuthUserList != nil:
		return &pb.AuthUserListResponse{Header: hdr, Users: a.UserNames()}, nil
	case req.AuthRoleList != nil:
		return &pb.AuthRoleListResponse{Header: hdr, Roles: a.RoleNames()}, nil
	case req.AuthUserAdd != nil:
		r := req.AuthUserAdd
		if r.Name == "" {
			return nil, ErrUserEmpty
		}
		if a.users[r.Name] != nil {
			return nil, ErrUserAlreadyExist
		}
		opts := &authpb.UserAddOptions{NoPassword: r.GetOptions().GetNoPassword()}
		u := &authpb.User{Name: []byte(r.Name), Options: opts}
		if !opts.NoPassword {
			u.Password = []byte(r.HashedPassword)
		}
		a.users[r.Name] = u
		a.Revision++
		return &pb.AuthUserAddResponse{Header: hdr}, nil
	case req.AuthUserDelete != nil:
		r := req.AuthUserDelete
		if a.Enabled && r.Name == RootName {
			return nil, ErrInvalidAuthMgmt
		}
		if a.users[r.Name] == nil {
			return nil, ErrUserNotFound
		}
		delete(a.users, r.Name)
		a.Revision++
		return &pb.AuthUserDeleteResponse{Header: hdr}, nil
	case req.AuthUserChangePassword != nil:
		r := req.AuthUserChangePassword
		u := a.users[r.Name]
		if u == nil {
			return nil, ErrUserNotFound
		}
		nu := proto.CloneOf(u)
		if !u.GetOptions().GetNoPassword() {
			nu.Password = []byte(r.HashedPassword)
		}
		a.users[r.Name] = nu
		a.Revision++
		return &pb.AuthUserChangePasswordResponse{Header: hdr}, nil
	case req.AuthUserGrantRole != nil:
		r := req.AuthUserGrantRole
		u := a.users[r.User]
		if u == nil {
			return nil, ErrUserNotFound
		}
		if r.Role != RootName && a.roles[r.Role] == nil {
			return nil, ErrRoleNotFound
		}
		i, found := slices.BinarySearch(u.Roles, r.Role)
		if found {
			return &pb.AuthUserGrantRoleResponse{Header: hdr}, nil
		}
		nu := proto.CloneOf(u)
		nu.Roles = slices.Insert(nu.Roles, i, r.Role)
		a.users[r.User] = nu
		a.Revision++
		return &pb.AuthUserGrantRoleResponse{Header: hdr}, nil
	case req.AuthUserRevokeRole != nil:
		r := req.AuthUserRevokeRole
		if a.Enabled && r.Name == RootName && r.Role == RootName {
			return nil, ErrInvalidAuthMgmt
		}
		u := a.users[r.Name]
		if u == nil {
			return nil, ErrUserNotFound
		}
		i, found := slices.BinarySearch(u.Roles, r.Role)
		if !found {
			return nil, ErrRoleNotGranted
		}
		nu := proto.CloneOf(u)
		nu.Roles = slices.Delete(nu.Roles, i, i+1)
		a.users[r.Name] = nu
		a.Revision++
		return &pb.AuthUserRevokeRoleResponse{Header: hdr}, nil
	case req.AuthRoleAdd != nil:
		r := req.AuthRoleAdd
		if r.Name == "" {
			return nil, ErrRoleEmpty
		}
		if a.roles[r.Name] != nil {
			return nil, ErrRoleAlreadyExist
		}
		a.roles[r.Name] = &authpb.Role{Name: []byte(r.Name)}
		a.Revision++
		return &pb.AuthRoleAddResponse{Header: hdr}, nil
	case req.AuthRoleDelete != nil:
		r := req.AuthRoleDelete
		if a.Enabled && r.Role == RootName {
			return nil, ErrInvalidAuthMgmt
		}
		if a.roles[r.Role] == nil {
			return nil, ErrRoleNotFound
		}
		delete(a.roles, r.Role)
		for _, name := range a.UserNames() {
			u := a.users[name]
			if i, found := slices.BinarySearch(u.Roles, r.Role); found {
				nu := proto.CloneOf(u)
				nu.Roles = slices.Delete(nu.Roles, i, i+1)
				a.users[name] = nu
			}
		}
		a.Revision++
		return &pb.AuthRoleDeleteResponse{Header: hdr}, nil
	case req.AuthRoleGrantPermission != nil:
		return a.grantPermission(req.AuthRoleGrantPermission, hdr)
	case req.AuthRoleRevokePermission != nil:
		r := req.AuthRoleRevokePermission
		role := a.roles[r.Role]
		if role == nil {
			return nil, ErrRoleNotFound
		}
		i := slices.IndexFunc(role.KeyPermission, func(p *authpb.Permission) bool {
			return bytes.Equal(p.Key, r.Key) && bytes.Equal(p.RangeEnd, r.RangeEnd)
		})
		if i < 0 {
			return nil, ErrPermissionNotGranted
		}
		nr := proto.CloneOf(role)
		nr.KeyPermission = slices.Delete(nr.KeyPermission, i, i+1)
		a.roles[r.Role] = nr
		a.Revision++
		return &pb.AuthRoleRevokePermissionResponse{Header: hdr}, nil
	}
	return nil, ErrUnknownRequest
}

// grantPermission adds a permission to a role, or changes the type of the
// one it holds on the same keys. As in etcd, the root role takes it too,
// though it changes nothing: root may do anything, and reading the role
// shows every key.
func (a *AuthState) grantPermission(r *pb.AuthRoleGrantPermissionRequest, hdr *pb.ResponseHeader) (proto.Message, error) {
	role := a.roles[r.Name]
	if role == nil {
		return nil, ErrRoleNotFound
	}
	if r.Perm == nil {
		return nil, ErrPermissionNotGiven
	}
	if !validPermissionRange(r.Perm.Key, r.Perm.RangeEnd) {
		return nil, ErrInvalidAuthMgmt
	}
	nr := proto.CloneOf(role)
	i := slices.IndexFunc(nr.KeyPermission, func(p *authpb.Permission) bool {
		return bytes.Equal(p.Key, r.Perm.Key) && bytes.Equal(p.RangeEnd, r.Perm.RangeEnd)
	})
	if i >= 0 {
		nr.KeyPermission[i].PermType = r.Perm.PermType
	} else {
		nr.KeyPermission = append(nr.KeyPermission, &authpb.Permission{PermType: r.Perm.PermType, Key: r.Perm.Key, RangeEnd: r.Perm.RangeEnd})
		slices.SortStableFunc(nr.KeyPermission, func(x, y *authpb.Permission) int {
			return cmp.Or(bytes.Compare(x.Key, y.Key), bytes.Compare(x.RangeEnd, y.RangeEnd))
		})
	}
	a.roles[r.Name] = nr
	a.Revision++
	return &pb.AuthRoleGrantPermissionResponse{Header: hdr}, nil
}

// validPermissionRange is etcd's isValidPermissionRange: a key, and an
// end that is empty (one key), "\x00" (every key from key on) or after
// the key.
func validPermissionRange(key, end []byte) bool {
	if len(key) == 0 {
		return false
	}
	return len(end) == 0 || (len(end) == 1 && end[0] == 0) || bytes.Compare(key, end) < 0
}

// writeAuth writes the auth section's payload: enabled u8, revision u64,
// then the users and the roles, each as a count u32 and, by name, the
// record's length u32 and its protobuf (deterministic).
func writeAuth(w io.Writer, a *AuthState) error {
	b := []byte{0}
	if a.Enabled {
		b[0] = 1
	}
	b = binary.LittleEndian.AppendUint64(b, a.Revision)
	enc := proto.MarshalOptions{Deterministic: true}
	add := func(m proto.Message) error {
		p, err := enc.Marshal(m)
		if err != nil {
			return err
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
		return nil
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(a.users)))
	for _, name := range a.UserNames() {
		if err := add(a.users[name]); err != nil {
			return err
		}
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(a.roles)))
	for _, name := range a.RoleNames() {
		if err := add(a.roles[name]); err != nil {
			return err
		}
	}
	_, err := w.Write(b)
	return err
}

func readAuth(r io.Reader) (*AuthState, error) {
	a := newAuthState()
	var b [9]byte
	if err := readFull(r, b[:], "auth header"); err != nil {
		return nil, err
	}
	if b[0] > 1 {
		return nil, snapCorrupt("auth enabled flag %d", b[0])
	}
	a.Enabled = b[0] == 1
	a.Revision = binary.LittleEndian.Uint64(b[1:])
	if a.Revision == 0 {
		return nil, snapCorrupt("auth revision 0")
	}
	// records reads a count, then each record into a new message from
	// newMsg, whose name must ascend.
	records := func(what string, newMsg func() proto.Message, name func(proto.Message) string, put func(string, proto.Message)) error {
		if err := readFull(r, b[:4], what+" count"); err != nil {
			return err
		}
		count := binary.LittleEndian.Uint32(b[:4])
		if count > authRecordsMax {
			return snapCorrupt("%d %s, at most %d", count, what, authRecordsMax)
		}
		last := ""
		for k := range count {
			if err := readFull(r, b[:4], what); err != nil {
				return err
			}
			size := binary.LittleEndian.Uint32(b[:4])
			if size > authRecordBytesMax {
				return snapCorrupt("%s record of %d bytes", what, size)
			}
			p := make([]byte, size)
			if err := readFull(r, p, what); err != nil {
				return err
			}
			m := newMsg()
			if err := proto.Unmarshal(p, m); err != nil {
				return snapCorrupt("%s: %v", what, err)
			}
			nm := name(m)
			if k > 0 && nm <= last {
				return snapCorrupt("%s out of order", what)
			}
			last = nm
			put(nm, m)
		}
		return nil
	}
	if err := records("users", func() proto.Message { return new(authpb.User) },
		func(m proto.Message) string { return string(m.(*authpb.User).Name) },
		func(nm string, m proto.Message) { a.users[nm] = m.(*authpb.User) }); err != nil {
		return nil, err
	}
	if err := records("roles", func() proto.Message { return new(authpb.Role) },
		func(m proto.Message) string { return string(m.(*authpb.Role).Name) },
		func(nm string, m proto.Message) { a.roles[nm] = m.(*authpb.Role) }); err != nil {
		return nil, err
	}
	return a, nil
}

// LeaseKeys returns the keys attached to lease id, sorted; none if it does
// not exist.
func (n *Node) LeaseKeys(id int64) [][]byte {
	l := n.leases.leases[id]
	if l == nil {
		return nil
	}
	return sortedKeys(l.keys)
}
