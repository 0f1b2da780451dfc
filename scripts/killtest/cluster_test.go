//go:build killtest

package killtest

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// clusterSize is the number of members TestKillCluster runs.
const clusterSize = 3

// TestKillCluster runs three members, SIGKILLs the leader while writers
// put through every member, lets the writers go on against the two left
// (retrying a put that failed), then restarts the killed member and checks
// every acknowledged write and that all members hash alike.
func TestKillCluster(t *testing.T) {
	seed, rng, root := runStart(t, "killtest-cluster-")
	bin := buildBasalt(t, root)
	srvs := make([]*server, clusterSize)
	var peers []string
	for i := range srvs {
		srvs[i] = newServer(t, bin, filepath.Join(root, fmt.Sprintf("m%d", i+1)),
			"--snapshot-count", fmt.Sprint(*snapshotCountFlag), "--initial-cluster-token", fmt.Sprintf("killtest-%d", seed))
		srvs[i].name = fmt.Sprintf("m%d", i+1)
		peers = append(peers, srvs[i].name+"="+srvs[i].peer)
	}
	endpoints := make([]string, len(srvs))
	for i, s := range srvs {
		s.cluster = strings.Join(peers, ",")
		endpoints[i] = s.client
	}
	m := &model{keys: make(map[string]*keyState)}
	for w := range *writersFlag {
		for k := range *keysFlag {
			m.keys[keyName(w, k)] = &keyState{}
		}
	}
	next := make([]int, *writersFlag)
	var resumed []time.Duration
	var lastRev int64
	for _, s := range srvs {
		s.start(t)
	}
	for round := range *roundsFlag {
		for _, s := range srvs {
			if s.cmd == nil {
				s.start(t)
			}
		}
		for _, s := range srvs {
			s.waitReady(t)
		}
		rev, _ := verify(t, srvs[round%len(srvs)], m, lastRev)
		lastRev = rev
		checkHashes(t, srvs)
		run := *runMinFlag + time.Duration(rng.Int64N(int64(*runMaxFlag-*runMinFlag)+1))
		before := m.acks.Load()
		killed, took := writeAndKillLeader(t, srvs, endpoints, m, next, run, rng.Uint64())
		resumed = append(resumed, took)
		t.Logf("round %d: verified at revision %d, hashes agree; %d acknowledged puts; killed leader %s after %v, writes resumed after %v",
			round+1, rev, m.acks.Load()-before, killed.name, run.Round(time.Millisecond), took.Round(time.Millisecond))
	}
	for _, s := range srvs {
		if s.cmd == nil {
			s.start(t)
		}
	}
	for _, s := range srvs {
		s.waitReady(t)
	}
	rev, n := verify(t, srvs[0], m, lastRev)
	checkHashes(t, srvs)
	for _, s := range srvs {
		s.stop(t)
	}
	slices.Sort(resumed)
	t.Logf("%d rounds: %d acknowledged puts, all present (%d keys) at final revision %d; hashes agree", *roundsFlag, m.acks.Load(), n, rev)
	t.Logf("first acknowledged put after the leader's SIGKILL: min %v, median %v, max %v",
		resumed[0].Round(time.Millisecond), resumed[len(resumed)/2].Round(time.Millisecond), resumed[len(resumed)-1].Round(time.Millisecond))
}

// writeAndKillLeader runs the writers for d, SIGKILLs the leader, and lets
// the writers go on until the survivors have acknowledged puts for a
// while. It returns the killed member and the time from the kill to the
// first put acknowledged after it.
func writeAndKillLeader(t *testing.T, srvs []*server, endpoints []string, m *model, next []int, d time.Duration, seed uint64) (*server, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(next)+1)
	for w := range next {
		wg.Go(func() {
			if err := writer(ctx, endpoints, m, w, &next[w], seed, true); err != nil {
				errs <- err
			}
		})
	}
	wg.Go(func() { compactor(ctx, endpoints, m) })
	time.Sleep(d)
	leader := findLeader(t, srvs)
	acks := m.acks.Load()
	leader.kill(t)
	leader.cmd = nil
	killedAt := time.Now()
	var took time.Duration
	for took == 0 {
		if m.acks.Load() > acks+int64(len(next)) {
			took = time.Since(killedAt)
		}
		if time.Since(killedAt) > requestTimeout {
			t.Fatalf("no writes acknowledged within %v of killing the leader %s", requestTimeout, leader.name)
		}
		time.Sleep(pollInterval)
	}
	time.Sleep(d / 2)
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return leader, took
}

// findLeader asks the running members who leads.
func findLeader(t *testing.T, srvs []*server) *server {
	t.Helper()
	ids := map[uint64]*server{}
	var lead uint64
	for _, s := range srvs {
		if s.cmd == nil {
			continue
		}
		cli := s.dial(t)
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		st, err := cli.Status(ctx, s.client)
		cancel()
		cli.Close()
		if err != nil {
			t.Fatalf("status of %s: %v", s.name, err)
		}
		ids[st.Header.MemberId] = s
		lead = st.Leader
	}
	if s, ok := ids[lead]; ok {
		return s
	}
	t.Fatalf("leader %x is none of the running members", lead)
	return nil
}

// checkHashes requires every member to hash alike at the newest revision
// they all have; the writers are stopped.
func checkHashes(t *testing.T, srvs []*server) {
	t.Helper()
	var rev int64
	clis := make([]*clientv3.Client, len(srvs))
	for i, s := range srvs {
		clis[i] = s.dial(t)
		defer clis[i].Close()
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		resp, err := clis[i].Get(ctx, "hash-probe")
		cancel()
		if err != nil {
			t.Fatalf("get on %s: %v", s.name, err)
		}
		if i == 0 || resp.Header.Revision < rev {
			rev = resp.Header.Revision
		}
	}
	hashes := map[uint32][]string{}
	for i, s := range srvs {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		resp, err := clis[i].HashKV(ctx, s.client, rev)
		cancel()
		if err != nil {
			t.Fatalf("hashkv on %s at revision %d: %v", s.name, rev, err)
		}
		hashes[resp.Hash] = append(hashes[resp.Hash], s.name)
	}
	if len(hashes) != 1 {
		t.Fatalf("members disagree at revision %d: %v", rev, hashes)
	}
}
