package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestLeaseLifecycle drives leases through clientv3 as etcd's clients do:
// grant, attach keys, keep alive, time to live, revoke, expire, restart.
func TestLeaseLifecycle(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	m := startMember(t, cfg)
	defer func() { m.Stop() }()
	cli := newClient(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	g, err := cli.Grant(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if g.ID <= 0 || g.TTL != 5 {
		t.Fatalf("grant: ID %d TTL %d, want a positive ID and TTL 5", g.ID, g.TTL)
	}
	for _, k := range []string{"b", "a"} {
		if _, err := cli.Put(ctx, k, "v", clientv3.WithLease(g.ID)); err != nil {
			t.Fatal(err)
		}
	}
	ttl, err := cli.TimeToLive(ctx, g.ID, clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{}
	for _, k := range ttl.Keys {
		keys = append(keys, string(k))
	}
	if ttl.GrantedTTL != 5 || ttl.TTL < 3 || ttl.TTL > 4 || !slices.Equal(keys, []string{"a", "b"}) {
		t.Fatalf("time to live: granted %d, TTL %d, keys %q; want 5, 3..4, [a b]", ttl.GrantedTTL, ttl.TTL, keys)
	}
	ka, err := cli.KeepAliveOnce(ctx, g.ID)
	if err != nil || ka.TTL != 5 {
		t.Fatalf("keepalive: %v, %v", ka, err)
	}
	ls, err := cli.Leases(ctx)
	if err != nil || len(ls.Leases) != 1 || ls.Leases[0].ID != g.ID {
		t.Fatalf("leases: %v, %v", ls, err)
	}

	// A client-chosen ID that is taken, and a TTL over the maximum.
	raw := pb.NewLeaseClient(cli.ActiveConnection())
	if _, err := raw.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: int64(g.ID), TTL: 10}); !errors.Is(err, rpctypes.ErrGRPCLeaseExist) {
		t.Fatalf("granting a taken ID: %v", err)
	}
	if _, err := raw.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: 42, TTL: 9000000001}); !errors.Is(err, rpctypes.ErrGRPCLeaseTTLTooLarge) {
		t.Fatalf("granting too large a TTL: %v", err)
	}

	before, err := cli.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	rv, err := cli.Revoke(ctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := before.Header.Revision + 1; rv.Header.Revision != want {
		t.Fatalf("revoke at revision %d, want %d: both keys go in one revision", rv.Header.Revision, want)
	}
	if got, err := cli.Get(ctx, "", clientv3.WithFromKey()); err != nil || got.Count != 0 {
		t.Fatalf("keys after the revoke: %v, %v", got, err)
	}
	if ttl, err := cli.TimeToLive(ctx, g.ID); err != nil || ttl.TTL != -1 {
		t.Fatalf("time to live after the revoke: %v, %v; want TTL -1", ttl, err)
	}
	// etcd #20616: a keepalive after the revoke must not succeed.
	if _, err := cli.KeepAliveOnce(ctx, g.ID); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Fatalf("keepalive after the revoke: %v", err)
	}
	if _, err := cli.Revoke(ctx, g.ID); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Fatalf("revoking twice: %v", err)
	}

	// The minimum TTL here is ceil(1.5 * 100ms) = 1s: the lease expires and
	// the leader revokes it with its key.
	short, err := cli.Grant(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "short", "v", clientv3.WithLease(short.ID)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool {
		got, err := cli.Get(ctx, "short")
		return err == nil && got.Count == 0
	})

	// Leases live through a restart; the key keeps its lease.
	long, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "long", "v", clientv3.WithLease(long.ID)); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	m = startMember(t, cfg)
	cli = newClient(t, m)
	ttl, err = cli.TimeToLive(ctx, long.ID, clientv3.WithAttachedKeys())
	if err != nil || ttl.GrantedTTL != 60 || ttl.TTL <= 0 || len(ttl.Keys) != 1 {
		t.Fatalf("after the restart: %v, %v", ttl, err)
	}
}

// TestLeaseKeepAliveStream: clientv3's KeepAlive keeps a lease past its
// TTL over one stream.
func TestLeaseKeepAliveStream(t *testing.T) {
	m := startMember(t, testConfig(t, t.TempDir()))
	defer m.Stop()
	cli := newClient(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	g, err := cli.Grant(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "k", "v", clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	kctx, kcancel := context.WithCancel(ctx)
	ch, err := cli.KeepAlive(kctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(2500 * time.Millisecond)
	for done := false; !done; {
		select {
		case r, ok := <-ch:
			if !ok {
				t.Fatal("the keepalive channel closed while the lease lived")
			}
			if r.TTL != 1 {
				t.Fatalf("keepalive answered TTL %d", r.TTL)
			}
		case <-deadline:
			done = true
		}
	}
	if got, err := cli.Get(ctx, "k"); err != nil || got.Count != 1 {
		t.Fatalf("the kept-alive lease's key: %v, %v", got, err)
	}
	kcancel()
	waitFor(t, 5*time.Second, func() bool {
		got, err := cli.Get(ctx, "k")
		return err == nil && got.Count == 0
	})
}

// TestLeaseHTTP: the gateway's lease paths answer as etcd's.
func TestLeaseHTTP(t *testing.T) {
	m := startMember(t, testConfig(t, t.TempDir()))
	defer m.Stop()
	for _, c := range []struct{ path, body, want string }{
		{"/v3/lease/grant", `{"TTL":"20","ID":"500"}`, `"ID":"500","TTL":"20"`},
		{"/v3/lease/grant", `{"TTL":20,"ID":500}`, `{"code":9,"message":"etcdserver: lease already exists"}`},
		{"/v3/lease/timetolive", `{"ID":"500"}`, `"ID":"500","TTL":"19","grantedTTL":"20"`},
		{"/v3/kv/lease/timetolive", `{"ID":"501"}`, `"ID":"501","TTL":"-1"`},
		{"/v3/lease/leases", `{}`, `"leases":[{"ID":"500"}]`},
		{"/v3/lease/keepalive", `{"ID":"500"}{"ID":"502"}`, `"ID":"500","TTL":"20"}}`},
		{"/v3/lease/revoke", `{"ID":"500"}`, `{"header":{`},
		{"/v3/kv/lease/revoke", `{"ID":"500"}`, `{"code":5,"message":"etcdserver: requested lease not found"}`},
	} {
		resp, err := http.Post(m.ClientURL()+c.path, "application/json", strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(strings.ReplaceAll(string(body), " ", ""), strings.ReplaceAll(c.want, " ", "")) {
			t.Errorf("POST %s %s: got %d %s, want it to contain %s", c.path, c.body, resp.StatusCode, body, c.want)
		}
	}
}

func waitFor(t *testing.T, limit time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not true after %v", limit)
		}
	}
}
