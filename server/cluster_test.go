package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// testCluster is a cluster of in-process members on loopback ports.
type testCluster struct {
	t       *testing.T
	token   string
	names   []string
	peers   map[string]string // name -> peer URL
	clients map[string]string // name -> client URL
	dirs    map[string]string
	members map[string]*Member
	// logs are what each member logged since it last started.
	logs map[string]*observer.ObservedLogs
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func newTestCluster(t *testing.T, size int) *testCluster {
	c := &testCluster{t: t, token: "test-" + t.Name(), peers: map[string]string{}, clients: map[string]string{}, dirs: map[string]string{}, members: map[string]*Member{}, logs: map[string]*observer.ObservedLogs{}}
	for i := range size {
		c.addName(fmt.Sprintf("m%d", i+1))
	}
	t.Cleanup(func() {
		for _, m := range c.members {
			m.Stop()
		}
	})
	return c
}

func (c *testCluster) addName(name string) {
	c.names = append(c.names, name)
	c.peers[name] = "http://" + freePort(c.t)
	c.clients[name] = "http://" + freePort(c.t)
	c.dirs[name] = c.t.TempDir()
}

func (c *testCluster) config(name, state string) *Config {
	var ic []string
	for _, n := range c.names {
		ic = append(ic, n+"="+c.peers[n])
	}
	cfg, err := ParseFlags([]string{
		"--name", name,
		"--data-dir", c.dirs[name],
		"--listen-client-urls", c.clients[name],
		"--advertise-client-urls", c.clients[name],
		"--listen-peer-urls", c.peers[name],
		"--initial-advertise-peer-urls", c.peers[name],
		"--initial-cluster", strings.Join(ic, ","),
		"--initial-cluster-state", state,
		"--initial-cluster-token", c.token,
		"--heartbeat-interval", "10", "--election-timeout", "100",
		"--snapshot-count", "50",
	}, nil, io.Discard)
	if err != nil {
		c.t.Fatal(err)
	}
	return cfg
}

// start starts the named members concurrently: a new cluster's first
// member cannot finish starting before a quorum runs.
func (c *testCluster) start(state string, names ...string) {
	c.t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	ms := make([]*Member, len(names))
	for i, name := range names {
		core, logs := observer.New(zap.InfoLevel)
		c.logs[name] = logs
		lg := zaptest.NewLogger(c.t).WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return zapcore.NewTee(c, core) }))
		wg.Go(func() {
			ms[i], errs[i] = Start(c.config(name, state), lg.Named(name))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.t.Fatal(err)
	}
	for i, name := range names {
		c.members[name] = ms[i]
	}
}

func (c *testCluster) stop(name string) {
	c.members[name].Stop()
	delete(c.members, name)
}

func (c *testCluster) client(name string) *clientv3.Client {
	c.t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.clients[name]}, DialTimeout: 5 * time.Second, Logger: zaptest.NewLogger(c.t)})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cli.Close() })
	return cli
}

// leader returns the name of the member that leads, as the running ones
// agree on it.
func (c *testCluster) leader() string {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ids := map[uint64]bool{}
		for _, m := range c.members {
			ids[m.loop.status.Load().Leader] = true
		}
		if len(ids) == 1 {
			for name, m := range c.members {
				if ids[m.memberID] {
					return name
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatal("the members do not agree on a leader")
	return ""
}

// putEventually retries a put through name until it succeeds.
func putEventually(t *testing.T, cli *clientv3.Client, key, val string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Put(ctx, key, val)
		cancel()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("put %s did not succeed within %v: %v", key, within, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestClusterWritesThroughAnyMemberSurviveLeaderLoss(t *testing.T) {
	c := newTestCluster(t, 3)
	c.start("new", c.names...)
	ctx := context.Background()
	for i, name := range c.names {
		if _, err := c.client(name).Put(ctx, fmt.Sprintf("k%d", i), name); err != nil {
			t.Fatalf("put through %s: %v", name, err)
		}
	}
	for _, name := range c.names {
		resp, err := c.client(name).Get(ctx, "k", clientv3.WithPrefix())
		if err != nil || len(resp.Kvs) != 3 {
			t.Fatalf("linearizable get through %s: %v %v", name, resp, err)
		}
	}
	list, err := c.client("m1").MemberList(ctx)
	if err != nil || len(list.Members) != 3 {
		t.Fatalf("member list: %v %v", list, err)
	}
	for _, mb := range list.Members {
		if mb.Name == "" || len(mb.ClientURLs) != 1 || mb.ClientURLs[0] != c.clients[mb.Name] || mb.PeerURLs[0] != c.peers[mb.Name] {
			t.Fatalf("member %v does not match its flags", mb)
		}
	}

	// Leases: granted through raft anywhere; renewals and TTLs, which only
	// the leader serves, are forwarded to it.
	lead := c.leader()
	for _, name := range c.names {
		cli := c.client(name)
		grant, err := cli.Grant(ctx, 60)
		if err != nil {
			t.Fatalf("grant through %s: %v", name, err)
		}
		if _, err := cli.Put(ctx, "leased-"+name, "v", clientv3.WithLease(grant.ID)); err != nil {
			t.Fatal(err)
		}
		ka, err := cli.KeepAliveOnce(ctx, grant.ID)
		if err != nil || ka.TTL != 60 {
			t.Fatalf("keepalive through %s (leader %s): %v %v", name, lead, ka, err)
		}
		ttl, err := cli.TimeToLive(ctx, grant.ID, clientv3.WithAttachedKeys())
		if err != nil || ttl.TTL <= 0 || len(ttl.Keys) != 1 {
			t.Fatalf("time to live through %s (leader %s): %v %v", name, lead, ttl, err)
		}
		if _, err := cli.Revoke(ctx, grant.ID); err != nil {
			t.Fatal(err)
		}
		if ka, err := cli.KeepAliveOnce(ctx, grant.ID); err == nil {
			t.Fatalf("keepalive of a revoked lease through %s: %v", name, ka)
		}
		if ttl, err := cli.TimeToLive(ctx, grant.ID); err != nil || ttl.TTL != -1 {
			t.Fatalf("time to live of a revoked lease through %s: %v %v", name, ttl, err)
		}
	}

	// MoveLeader: only the leader hands leadership over, to a voter.
	var follower string
	for _, name := range c.names {
		if name != lead {
			follower = name
		}
	}
	target := c.members[follower].memberID
	if _, err := c.client(follower).MoveLeader(ctx, target); err == nil || rpctypes.ErrorDesc(err) != rpctypes.ErrorDesc(rpctypes.ErrGRPCNotLeader) {
		t.Fatalf("move-leader through a follower: %v, want %v", err, rpctypes.ErrGRPCNotLeader)
	}
	if _, err := c.client(lead).MoveLeader(ctx, 12345); err == nil || rpctypes.ErrorDesc(err) != rpctypes.ErrorDesc(rpctypes.ErrGRPCBadLeaderTransferee) {
		t.Fatalf("move-leader to an unknown member: %v, want %v", err, rpctypes.ErrGRPCBadLeaderTransferee)
	}
	if _, err := c.client(lead).MoveLeader(ctx, target); err != nil {
		t.Fatal(err)
	}
	if now := c.leader(); now != follower {
		t.Fatalf("after move-leader to %s, %s leads", follower, now)
	}
	st, err := c.client(lead).Status(ctx, c.clients[lead])
	if err != nil || st.Leader != target || st.IsLearner {
		t.Fatalf("status of the old leader: %v %v", st, err)
	}

	old := c.leader()
	c.stop(old)
	var other string
	for _, name := range c.names {
		if name != old {
			other = name
		}
	}
	took := putEventually(t, c.client(other), "after", "leader-loss", 5*time.Second)
	t.Logf("writes resumed %v after stopping leader %s", took, old)
	// Past --snapshot-count: the leader's log no longer holds what the
	// stopped member lacks, so it catches up from a snapshot.
	for i := range 120 {
		if _, err := c.client(other).Put(ctx, fmt.Sprintf("while-down%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}

	c.start("new", old)
	if n := c.logs[old].FilterMessage("received snapshot").Len(); n == 0 {
		t.Fatalf("the restarted member %s caught up without a snapshot", old)
	}
	for i := range 100 {
		if _, err := c.client(c.names[i%3]).Put(ctx, fmt.Sprintf("more%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	c.checkHashes()
}

// checkHashes checks that every running member has the same revision and
// HashKV once each has caught up.
func (c *testCluster) checkHashes() {
	c.t.Helper()
	ctx := context.Background()
	var rev int64
	for name := range c.members {
		resp, err := c.client(name).Get(ctx, "any")
		if err != nil {
			c.t.Fatal(err)
		}
		rev = max(rev, resp.Header.Revision)
	}
	hashes := map[uint32][]string{}
	for name := range c.members {
		cli := c.client(name)
		var h *clientv3.HashKVResponse
		var err error
		for range 100 {
			if h, err = cli.HashKV(ctx, c.clients[name], rev); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			c.t.Fatalf("hashkv on %s: %v", name, err)
		}
		hashes[h.Hash] = append(hashes[h.Hash], name)
	}
	if len(hashes) != 1 {
		c.t.Fatalf("members disagree at revision %d: %v", rev, hashes)
	}
}

func TestClusterAddPromoteRemove(t *testing.T) {
	c := newTestCluster(t, 3)
	c.start("new", c.names...)
	ctx := context.Background()
	cli := c.client("m1")
	for i := range 120 { // past --snapshot-count: the new member gets a snapshot
		if _, err := cli.Put(ctx, fmt.Sprintf("k%03d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	c.addName("m4")
	var add *clientv3.MemberAddResponse
	var err error
	for range 100 { // strict reconfig: the peers must be connected for a while
		if add, err = cli.MemberAddAsLearner(ctx, []string{c.peers["m4"]}); !errors.Is(err, rpctypes.ErrUnhealthy) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if !add.Member.IsLearner || len(add.Members) != 4 {
		t.Fatalf("member add: %v", add)
	}
	if _, err := cli.MemberAddAsLearner(ctx, []string{"http://127.0.0.1:1"}); !errors.Is(err, rpctypes.ErrTooManyLearners) {
		t.Fatalf("second learner: %v, want %v", err, rpctypes.ErrTooManyLearners)
	}
	if _, err := cli.MemberAdd(ctx, []string{c.peers["m2"]}); !errors.Is(err, rpctypes.ErrPeerURLExist) {
		t.Fatalf("add with a used peer URL: %v, want %v", err, rpctypes.ErrPeerURLExist)
	}
	c.start("existing", "m4")
	if st, err := c.client("m4").Status(ctx, c.clients["m4"]); err != nil || !st.IsLearner {
		t.Fatalf("status of the learner: %v %v", st, err)
	}
	if _, err := c.client("m4").Put(ctx, "k", "v"); err == nil || rpctypes.ErrorDesc(err) != rpctypes.ErrorDesc(rpctypes.ErrGRPCNotSupportedForLearner) {
		t.Fatalf("put on a learner: %v, want %v", err, rpctypes.ErrGRPCNotSupportedForLearner)
	}
	var count int64
	for range 100 {
		resp, err := c.client("m4").Get(ctx, "k", clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatalf("serializable get on a learner: %v", err)
		}
		if count = resp.Count; count == 120 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if count != 120 {
		t.Fatalf("the learner holds %d keys, want 120", count)
	}
	// Promote through a follower: it forwards to the leader.
	follower := "m1"
	if c.leader() == "m1" {
		follower = "m2"
	}
	for range 100 {
		if _, err = c.client(follower).MemberPromote(ctx, add.Member.ID); !errors.Is(err, rpctypes.ErrMemberLearnerNotReady) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.MemberPromote(ctx, add.Member.ID); !errors.Is(err, rpctypes.ErrMemberNotLearner) {
		t.Fatalf("promote a voter: %v, want %v", err, rpctypes.ErrMemberNotLearner)
	}
	putEventually(t, c.client("m4"), "from-m4", "v", 5*time.Second)
	// A joined member restarts from its data dir: the members table it
	// restores names its peers, whose IDs the flags cannot derive.
	c.stop("m4")
	c.start("existing", "m4")
	putEventually(t, c.client("m4"), "from-m4-again", "v", 5*time.Second)
	c.checkHashes()

	if _, err := cli.MemberRemove(ctx, 12345); !errors.Is(err, rpctypes.ErrMemberNotFound) {
		t.Fatalf("remove an unknown member: %v, want %v", err, rpctypes.ErrMemberNotFound)
	}
	rm, err := cli.MemberRemove(ctx, add.Member.ID)
	if err != nil || len(rm.Members) != 3 {
		t.Fatalf("member remove: %v %v", rm, err)
	}
	select {
	case <-c.members["m4"].Removed():
	case <-time.After(5 * time.Second):
		t.Fatal("the removed member did not learn it was removed")
	}
	c.stop("m4")
	putEventually(t, cli, "after-remove", "v", 5*time.Second)

	// Removing the leader: it stops, the two left elect one of them.
	lead := c.leader()
	var via string
	for _, name := range []string{"m1", "m2", "m3"} {
		if name != lead {
			via = name
		}
	}
	if _, err := c.client(via).MemberRemove(ctx, c.members[lead].memberID); err != nil {
		t.Fatalf("removing the leader %s through %s: %v", lead, via, err)
	}
	select {
	case <-c.members[lead].Removed():
	case <-time.After(5 * time.Second):
		t.Fatal("the removed leader did not learn it was removed")
	}
	c.stop(lead)
	putEventually(t, c.client(via), "after-leader-removed", "v", 5*time.Second)
	c.checkHashes()
}

func TestClusterRefusesPeerOfAnotherCluster(t *testing.T) {
	a := newTestCluster(t, 1)
	a.start("new", "m1")
	tr := newTransport(zaptest.NewLogger(t), 1, 0xdead)
	p := &peer{t: tr, id: a.members["m1"].memberID}
	p.urls.Store(&[]string{a.peers["m1"]})
	_, err := p.dial()
	if !errors.Is(err, errClusterIDMismatch) || !strings.Contains(err.Error(), idString(a.members["m1"].clusterID)) {
		t.Fatalf("dial from another cluster: %v, want %v naming cluster %s", err, errClusterIDMismatch, idString(a.members["m1"].clusterID))
	}
}
