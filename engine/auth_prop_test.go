package engine

import (
	"bytes"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	"pgregory.net/rapid"
)

// TestAuthCoverageModel checks the permission check against a model that
// needs no interval arithmetic: keys ordered as bytes, a request [b, e) is
// covered unless some key in it lies in no permission, and the least such
// key is b or the end of a permission, so checking those points decides.
func TestAuthCoverageModel(t *testing.T) {
	keyGen := rapid.SampledFrom([]string{"a", "aa", "ab", "b", "ba", "bb", "c"})
	endGen := rapid.SampledFrom([]string{"", "\x00", "a", "aa", "ab", "b", "ba", "bb", "c", "d"})
	rapid.Check(t, func(t *rapid.T) {
		type perm struct {
			key, end string
			typ      authpb.Permission_Type
		}
		var perms []*authpb.Permission
		for _, p := range rapid.SliceOfN(rapid.Custom(func(t *rapid.T) perm {
			return perm{keyGen.Draw(t, "key"), endGen.Draw(t, "end"),
				authpb.Permission_Type(rapid.IntRange(0, 2).Draw(t, "type"))}
		}), 0, 5).Draw(t, "perms") {
			if validPermissionRange([]byte(p.key), []byte(p.end)) {
				perms = append(perms, &authpb.Permission{Key: []byte(p.key), RangeEnd: []byte(p.end), PermType: p.typ})
			}
		}
		a := newAuthState()
		a.Enabled = true
		a.roles["r"] = &authpb.Role{Name: []byte("r"), KeyPermission: perms}
		a.users["u"] = &authpb.User{Name: []byte("u"), Roles: []string{"r"}}
		key, end := keyGen.Draw(t, "req-key"), endGen.Draw(t, "req-end")
		typ := authpb.Permission_Type(rapid.IntRange(0, 1).Draw(t, "req-type"))
		req := permInterval([]byte(key), []byte(end))
		if req.end != nil && bytes.Compare(req.begin, req.end) >= 0 {
			return // an empty range: etcd refuses it before auth
		}
		in := func(iv interval, x []byte) bool {
			return bytes.Compare(iv.begin, x) <= 0 && (iv.end == nil || bytes.Compare(x, iv.end) < 0)
		}
		var granted []interval
		points := [][]byte{req.begin}
		for _, p := range perms {
			if p.PermType == authpb.READWRITE || p.PermType == typ {
				iv := permInterval(p.Key, p.RangeEnd)
				granted = append(granted, iv)
				if iv.end != nil {
					points = append(points, iv.end)
				}
			}
		}
		want := true
		for _, x := range points {
			if !in(req, x) {
				continue
			}
			hit := false
			for _, iv := range granted {
				hit = hit || in(iv, x)
			}
			want = want && hit
		}
		err := a.IsPermitted("u", a.Revision, []byte(key), []byte(end), typ)
		if got := err == nil; got != want {
			t.Fatalf("[%q, %q) %s with %v: permitted %t, the model says %t", key, end, typ, perms, got, want)
		}
	})
}
