package engine

import (
	"bytes"
	"errors"
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

// TestAuthSectionRoundTrip: the auth section reads back what was written,
// and a damaged one is refused as corruption.
func TestAuthSectionRoundTrip(t *testing.T) {
	a := newAuthState()
	a.Enabled, a.Revision = true, 9
	a.users["root"] = &authpb.User{Name: []byte("root"), Password: []byte("h"), Roles: []string{"root"}}
	a.users["u"] = &authpb.User{Name: []byte("u"), Options: &authpb.UserAddOptions{NoPassword: true}}
	a.roles["r"] = &authpb.Role{Name: []byte("r"), KeyPermission: []*authpb.Permission{{PermType: authpb.READ, Key: []byte("k"), RangeEnd: []byte{0}}}}
	var buf bytes.Buffer
	if err := writeAuth(&buf, a); err != nil {
		t.Fatal(err)
	}
	got, err := readAuth(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := writeAuth(&again, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) || got.Enabled != a.Enabled || got.Revision != a.Revision {
		t.Fatalf("read back %+v", got)
	}
	body := buf.Bytes()
	for name, damaged := range map[string][]byte{
		"truncated":  body[:len(body)-1],
		"bad flag":   append([]byte{2}, body[1:]...),
		"revision 0": append(append([]byte{1}, make([]byte, 8)...), body[9:]...),
	} {
		if _, err := readAuth(bytes.NewReader(damaged)); !errors.Is(err, ErrSnapshotCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
