package engine

import (
	"fmt"
	"strings"

	"github.com/cockroachdb/datadriven"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// authCmd runs the auth commands of the golden files:
//
//	auth <op> [name=] [role=] [k=] [end=] [perm=READ|WRITE|READWRITE] [hash=] [no-password] [as=user] [authrev=N] [v=]
//	    submits an auth request (op: enable, disable, status, user-add,
//	    user-delete, user-passwd, user-grant, user-revoke, user-get,
//	    user-list, role-add, role-delete, role-grant, role-revoke,
//	    role-get, role-list, authenticate with token=) or a put (op put)
//	    made by user as holding a token of auth revision authrev;
//	auth-check name= authrev= k= [end=] perm= — the door's permission check;
//	auth-state — the store, as the member holds it.
func (h *harness) authCmd(d *datadriven.TestData) string {
	a := h.node.auth
	switch d.Cmd {
	case "auth-check":
		err := a.IsPermitted(arg(d, "name"), uint64(intArg(d, "authrev")), []byte(arg(d, "k")), []byte(endArg(d)), permArg(d))
		if err != nil {
			return "error: " + err.Error()
		}
		return "permitted"
	case "auth-state":
		var b strings.Builder
		fmt.Fprintf(&b, "enabled=%t revision=%d", a.Enabled, a.Revision)
		for _, n := range a.UserNames() {
			u := a.users[n]
			fmt.Fprintf(&b, "\nuser %s password=%q no-password=%t roles=%v", n, u.Password, u.GetOptions().GetNoPassword(), u.Roles)
		}
		for _, n := range a.RoleNames() {
			fmt.Fprintf(&b, "\nrole %s%s", n, describePerms(a.roles[n].KeyPermission))
		}
		return b.String()
	}
	name, role := arg(d, "name"), arg(d, "role")
	req := &pb.InternalRaftRequest{}
	switch op := d.CmdArgs[0].Key; op {
	case "enable":
		req.AuthEnable = &pb.AuthEnableRequest{}
	case "disable":
		req.AuthDisable = &pb.AuthDisableRequest{}
	case "status":
		req.AuthStatus = &pb.AuthStatusRequest{}
	case "user-add":
		req.AuthUserAdd = &pb.AuthUserAddRequest{Name: name, HashedPassword: arg(d, "hash"), Options: &authpb.UserAddOptions{NoPassword: d.HasArg("no-password")}}
	case "user-delete":
		req.AuthUserDelete = &pb.AuthUserDeleteRequest{Name: name}
	case "user-passwd":
		req.AuthUserChangePassword = &pb.AuthUserChangePasswordRequest{Name: name, HashedPassword: arg(d, "hash")}
	case "user-grant":
		req.AuthUserGrantRole = &pb.AuthUserGrantRoleRequest{User: name, Role: role}
	case "user-revoke":
		req.AuthUserRevokeRole = &pb.AuthUserRevokeRoleRequest{Name: name, Role: role}
	case "user-get":
		req.AuthUserGet = &pb.AuthUserGetRequest{Name: name}
	case "user-list":
		req.AuthUserList = &pb.AuthUserListRequest{}
	case "role-add":
		req.AuthRoleAdd = &pb.AuthRoleAddRequest{Name: role}
	case "role-delete":
		req.AuthRoleDelete = &pb.AuthRoleDeleteRequest{Role: role}
	case "role-grant":
		var perm *authpb.Permission
		if d.HasArg("perm") {
			perm = &authpb.Permission{PermType: permArg(d), Key: []byte(arg(d, "k")), RangeEnd: []byte(endArg(d))}
		}
		req.AuthRoleGrantPermission = &pb.AuthRoleGrantPermissionRequest{Name: role, Perm: perm}
	case "role-revoke":
		req.AuthRoleRevokePermission = &pb.AuthRoleRevokePermissionRequest{Role: role, Key: []byte(arg(d, "k")), RangeEnd: []byte(endArg(d))}
	case "role-get":
		req.AuthRoleGet = &pb.AuthRoleGetRequest{Role: role}
	case "role-list":
		req.AuthRoleList = &pb.AuthRoleListRequest{}
	case "authenticate":
		req.Authenticate = &pb.InternalAuthenticateRequest{Name: name, SimpleToken: arg(d, "token")}
	case "put":
		req.Put = &pb.PutRequest{Key: []byte(arg(d, "k")), Value: []byte(arg(d, "v"))}
	default:
		d.Fatalf(nil, "unknown auth op %q", op)
	}
	req.Header = &pb.RequestHeader{Username: arg(d, "as"), AuthRevision: uint64(intArg(d, "authrev"))}
	res, err := h.write(req)
	if err != nil {
		return "error: " + err.Error()
	}
	return describeAuth(res) + fmt.Sprintf(" (auth revision %d)", h.node.auth.Revision)
}

// endArg is the end= argument, where \0 stands for the byte 0.
func endArg(d *datadriven.TestData) string { return strings.ReplaceAll(arg(d, "end"), `\0`, "\x00") }

func permArg(d *datadriven.TestData) authpb.Permission_Type {
	t, ok := authpb.Permission_Type_value[arg(d, "perm")]
	if !ok {
		d.Fatalf(nil, "unknown permission %q", arg(d, "perm"))
	}
	return authpb.Permission_Type(t)
}

func describePerms(ps []*authpb.Permission) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, " %s[%q,%q)", p.PermType, p.Key, p.RangeEnd)
	}
	return b.String()
}

func describeAuth(m proto.Message) string {
	switch r := m.(type) {
	case *pb.AuthStatusResponse:
		return fmt.Sprintf("enabled=%t auth-revision=%d", r.Enabled, r.AuthRevision)
	case *pb.AuthUserGetResponse:
		return fmt.Sprintf("roles=%v", r.Roles)
	case *pb.AuthUserListResponse:
		return fmt.Sprintf("users=%v", r.Users)
	case *pb.AuthRoleGetResponse:
		return "perms:" + describePerms(r.Perm)
	case *pb.AuthRoleListResponse:
		return fmt.Sprintf("roles=%v", r.Roles)
	case *pb.AuthenticateResponse:
		return "token=" + r.Token
	}
	return strings.TrimPrefix(fmt.Sprintf("%T", m), "*etcdserverpb.")
}
