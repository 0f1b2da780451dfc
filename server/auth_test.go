package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"

	"github.com/basaltdb/basalt/engine"
)

func TestPasswordHash(t *testing.T) {
	h, err := hashPassword("secret")
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := hashPassword("secret")
	if h == h2 {
		t.Fatalf("two hashes of one password are equal (no salt): %s", h)
	}
	if !checkPassword([]byte(h), "secret") || !checkPassword([]byte(h2), "secret") {
		t.Fatal("the password does not match its hash")
	}
	for _, bad := range []string{"", "Secret", "secret "} {
		if checkPassword([]byte(h), bad) {
			t.Fatalf("%q matches the hash of %q", bad, "secret")
		}
	}
	for _, hash := range []string{"", "pbkdf2-sha256$1$$", "bcrypt$x$y$z", "pbkdf2-sha256$99999999$AAAA$AAAA"} {
		if checkPassword([]byte(hash), "secret") {
			t.Fatalf("malformed hash %q matches", hash)
		}
	}
}

func TestParseAuthToken(t *testing.T) {
	for _, ok := range []string{"simple", "jwt,pub-key=a,sign-method=RS256", "jwt,priv-key=b,sign-method=ES256,ttl=3s"} {
		if _, err := parseAuthToken(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "simple,x=1", "paseto", "jwt", "jwt,pub-key=a", "jwt,pub-key=a,sign-method=HS256", "jwt,pub-key=a,sign-method=RS256,ttl=x", "jwt,foo=1,sign-method=RS256"} {
		if _, err := parseAuthToken(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// writePEM writes a key to dir/name, PEM-encoded.
func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestJWTTokens(t *testing.T) {
	dir := t.TempDir()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rpub, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	ekDER, _ := x509.MarshalECPrivateKey(ek)
	epub, _ := x509.MarshalPKIXPublicKey(&ek.PublicKey)
	rsaPriv := writePEM(t, dir, "rsa.key", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk))
	rsaPub := writePEM(t, dir, "rsa.pub", "PUBLIC KEY", rpub)
	ecPriv := writePEM(t, dir, "ec.key", "EC PRIVATE KEY", ekDER)
	ecPub := writePEM(t, dir, "ec.pub", "PUBLIC KEY", epub)
	now := time.Unix(1_700_000_000, 0)
	for _, c := range []struct{ method, priv, pub string }{
		{"RS256", rsaPriv, rsaPub}, {"PS384", rsaPriv, rsaPub}, {"ES256", ecPriv, ecPub},
	} {
		signer, err := newJWTTokens(&jwtOptions{privKey: c.priv, method: c.method, ttl: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		verifier, err := newJWTTokens(&jwtOptions{pubKey: c.pub, method: c.method, ttl: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := signer.assign("alice", 7, now)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := verifier.lookup(tok, now.Add(59*time.Second))
		if !ok || got.user != "alice" || got.rev != 7 {
			t.Fatalf("%s: a verifier reads %+v, %t", c.method, got, ok)
		}
		if _, ok := verifier.lookup(tok, now.Add(time.Minute)); ok {
			t.Fatalf("%s: an expired token is accepted", c.method)
		}
		if _, ok := verifier.lookup(tok[:len(tok)-3]+"AAA", now); ok {
			t.Fatalf("%s: a token with a forged signature is accepted", c.method)
		}
		if _, err := verifier.assign("alice", 7, now); !errors.Is(err, errJWTVerifyOnly) {
			t.Fatalf("%s: a verify-only member signs: %v", c.method, err)
		}
	}
	// A token signed with one method is refused by a member of another.
	rs, _ := newJWTTokens(&jwtOptions{privKey: rsaPriv, method: "RS256", ttl: time.Minute})
	ps, _ := newJWTTokens(&jwtOptions{pubKey: rsaPub, method: "PS256", ttl: time.Minute})
	tok, _ := rs.assign("alice", 7, now)
	if _, ok := ps.lookup(tok, now); ok {
		t.Fatal("an RS256 token is accepted by a PS256 member")
	}
}

func TestSimpleTokensExpire(t *testing.T) {
	ts := newSimpleTokens(time.Minute)
	now := time.Unix(1_700_000_000, 0)
	tok := ts.newToken()
	ts.register([]engine.AssignedToken{{Token: tok, User: "u", Revision: 3}}, now)
	if got, ok := ts.lookup(tok, now.Add(50*time.Second)); !ok || got.user != "u" || got.rev != 3 {
		t.Fatalf("lookup: %+v, %t", got, ok)
	}
	// Each use renews it.
	if _, ok := ts.lookup(tok, now.Add(100*time.Second)); !ok {
		t.Fatal("a token used within its TTL expired")
	}
	if _, ok := ts.lookup(tok, now.Add(161*time.Second)); ok {
		t.Fatal("a token unused for longer than its TTL is accepted")
	}
	if _, ok := ts.lookup("nope", now); ok {
		t.Fatal("an unknown token is accepted")
	}
}

// TestAuthAtTheDoor runs etcd's auth flow against a member: enabling,
// tokens, permissions on keys, admin-only and user-only RPCs, and a token
// made old by a change to the store.
func TestAuthAtTheDoor(t *testing.T) {
	m := startMember(t, testConfig(t, t.TempDir()))
	defer m.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := newClient(t, m)
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	wantErr := func(want error) func(any, error) {
		return func(_ any, err error) {
			t.Helper()
			if !errors.Is(rpctypes.Error(err), rpctypes.Error(want)) {
				t.Fatalf("got %v, want %v", err, want)
			}
		}
	}
	wantErr(rpctypes.ErrGRPCRootUserNotExist)(cli.AuthEnable(ctx))
	must(cli.UserAdd(ctx, "root", "rootpw"))
	wantErr(rpctypes.ErrGRPCRootRoleNotExist)(cli.AuthEnable(ctx))
	must(cli.UserGrantRole(ctx, "root", "root"))
	must(cli.RoleAdd(ctx, "r"))
	must(cli.RoleGrantPermission(ctx, "r", "a", "c", clientv3.PermissionType(clientv3.PermReadWrite)))
	must(cli.UserAdd(ctx, "u", "upw"))
	must(cli.UserGrantRole(ctx, "u", "r"))
	must(cli.AuthEnable(ctx))

	wantErr(rpctypes.ErrGRPCUserEmpty)(cli.Get(ctx, "a"))
	wantErr(rpctypes.ErrGRPCUserEmpty)(cli.Status(ctx, m.ClientURL()))
	user := func(name, pw string) *clientv3.Client {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL()}, Username: name, Password: pw,
			DialTimeout: 5 * time.Second, Logger: zaptest.NewLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	if _, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL()}, Username: "u", Password: "bad",
		DialTimeout: 5 * time.Second, Logger: zaptest.NewLogger(t)}); !errors.Is(rpctypes.Error(err), rpctypes.ErrAuthFailed) {
		t.Fatalf("a wrong password: %v", err)
	}
	root, u := user("root", "rootpw"), user("u", "upw")
	must(u.Put(ctx, "b", "1"))
	must(u.Get(ctx, "a", clientv3.WithRange("c")))
	wantErr(rpctypes.ErrGRPCPermissionDenied)(u.Put(ctx, "c", "1"))
	wantErr(rpctypes.ErrGRPCPermissionDenied)(u.Get(ctx, "a", clientv3.WithRange("d")))
	wantErr(rpctypes.ErrGRPCPermissionDenied)(u.Txn(ctx).If(clientv3.Compare(clientv3.Value("z"), "=", "1")).Commit())
	must(u.Status(ctx, m.ClientURL()))
	wantErr(rpctypes.ErrGRPCPermissionDenied)(u.Compact(ctx, 1))
	wantErr(rpctypes.ErrGRPCPermissionDenied)(u.UserList(ctx))
	must(root.UserList(ctx))
	must(root.Compact(ctx, 1))

	// A watch the user may not make is refused in its created response.
	wresp := <-u.Watch(ctx, "z")
	if !wresp.Canceled || wresp.Err() == nil {
		t.Fatalf("a watch on a key not granted: %+v", wresp)
	}

	// Revoking the permission makes u's token old; the client
	// authenticates again and is refused.
	must(root.RoleRevokePermission(ctx, "r", "a", "c"))
	wantErr(rpctypes.ErrGRPCPermissionDenied)(u.Put(ctx, "b", "2"))
	must(root.AuthDisable(ctx))
	must(cli.Put(ctx, "z", "1"))
}
