//go:build killtest

// Package killtest kills a real basalt process with SIGKILL at random
// moments while concurrent clients write to it, restarts it, and checks
// that every acknowledged write survived. It also measures restart time
// with a million keys. See README.md; the build tag keeps it out of
// `go test ./...`.
package killtest

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	roundsFlag        = flag.Int("rounds", 20, "kill-restart rounds")
	writersFlag       = flag.Int("writers", 16, "concurrent writers, each with its own keys")
	keysFlag          = flag.Int("keys", 50, "keys per writer")
	valueBytesFlag    = flag.Int("value-bytes", 100, "bytes per value")
	snapshotCountFlag = flag.Int("snapshot-count", 100, "the server's --snapshot-count")
	seedFlag          = flag.Uint64("seed", 0, "seed of the kill times (0: from the clock, printed)")
	runMinFlag        = flag.Duration("run-min", 200*time.Millisecond, "shortest time writers run before a kill")
	runMaxFlag        = flag.Duration("run-max", 3*time.Second, "longest time writers run before a kill")
	startKillFlag     = flag.Float64("start-kill", 0.25, "fraction of rounds that also kill the server once while it starts")
	keepFlag          = flag.Bool("keep", false, "keep the data dir and logs even if the test passes")
	selfCheckFlag     = flag.Bool("selfcheck", false, "prove the checks: lose the data dir after the second round; the test must fail")
)

// keyState is what the test knows about one key. A writer writes its keys
// one put at a time, so at most one put of a key is unanswered.
type keyState struct {
	// acked is the value of the newest acknowledged put (or the newest
	// value read back), rev its mod revision; acked is "" before any.
	acked string
	rev   int64
	// pending is a put sent whose answer never came (the server was
	// killed): it may or may not have survived.
	pending string
	// retried is set when the acknowledged put was sent again after a
	// failed attempt, which may still apply after it: the same value at a
	// later revision is then no loss.
	retried bool
}

// model is every key's state; each writer owns its keys' entries, and
// the checks run while no writer does.
type model struct {
	keys map[string]*keyState
	// acks counts acknowledged puts; maxRev is the highest revision any
	// answer carried.
	acks   atomic.Int64
	maxRev atomic.Int64
}

func keyName(w, k int) string { return fmt.Sprintf("kill/%03d/%04d", w, k) }

// runStart draws the run's kill times from -seed (or the clock) and makes
// its folder: a temporary one, or with -keep one that outlives the test.
func runStart(t *testing.T, keptPrefix string) (seed uint64, rng *rand.Rand, root string) {
	t.Helper()
	seed = *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -seed %d)", seed, seed)
	rng = rand.New(rand.NewPCG(seed, 0))
	if !*keepFlag {
		return seed, rng, t.TempDir()
	}
	root, err := os.MkdirTemp("", keptPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { t.Logf("data dirs and server logs kept in %s", root) })
	return seed, rng, root
}

func TestKill(t *testing.T) {
	_, rng, root := runStart(t, "killtest-")
	bin := buildBasalt(t, root)
	srv := newServer(t, bin, filepath.Join(root, "member"), "--snapshot-count", fmt.Sprint(*snapshotCountFlag))
	if !*keepFlag {
		t.Cleanup(func() {
			if !t.Failed() {
				return
			}
			dst, err := os.MkdirTemp("", "killtest-failed-")
			if err == nil {
				err = os.Rename(srv.dir, filepath.Join(dst, "member"))
			}
			fmt.Fprintf(os.Stderr, "killtest: the failed run's data dir and server log: %s (%v)\n", dst, err)
		})
	}
	m := &model{keys: make(map[string]*keyState)}
	for w := range *writersFlag {
		for k := range *keysFlag {
			m.keys[keyName(w, k)] = &keyState{}
		}
	}
	next := make([]int, *writersFlag) // each writer's next put number
	var ready []time.Duration
	var lastRev int64
	verified := 0
	for round := range *roundsFlag {
		if *selfCheckFlag && round == 2 {
			if err := os.RemoveAll(filepath.Join(srv.dir, "data")); err != nil {
				t.Fatal(err)
			}
		}
		srv.start(t)
		startKill := ""
		if rng.Float64() < *startKillFlag {
			// Kill it once while it recovers, then start it again.
			at := time.Duration(rng.Int64N(int64(300 * time.Millisecond)))
			time.Sleep(at)
			srv.kill(t)
			srv.start(t)
			startKill = fmt.Sprintf(" (after a SIGKILL %v into a start)", at.Round(time.Millisecond))
		}
		ready = append(ready, srv.waitReady(t))
		rev, n := verify(t, srv, m, lastRev)
		lastRev, verified = rev, verified+n
		run := *runMinFlag + time.Duration(rng.Int64N(int64(*runMaxFlag-*runMinFlag)+1))
		before := m.acks.Load()
		write(t, srv, m, next, run, rng.Uint64())
		t.Logf("round %d: ready in %v%s, verified %d keys at revision %d; %d acknowledged puts in %v, then SIGKILL",
			round+1, ready[len(ready)-1].Round(time.Millisecond), startKill, n, rev, m.acks.Load()-before, run.Round(time.Millisecond))
	}
	srv.start(t)
	ready = append(ready, srv.waitReady(t))
	rev, n := verify(t, srv, m, lastRev)
	verified += n
	srv.stop(t)
	slices.Sort(ready)
	t.Logf("%d rounds: %d acknowledged puts, all present; %d key checks; final revision %d", *roundsFlag, m.acks.Load(), verified, rev)
	t.Logf("restart to first answered Get: min %v, median %v, max %v", ready[0].Round(time.Millisecond), ready[len(ready)/2].Round(time.Millisecond), ready[len(ready)-1].Round(time.Millisecond))
	t.Logf("server log: %d snapshots saved, %d uncommitted snapshot files removed at start, %d torn WAL tails cut, %d snapshots found damaged",
		srv.countLog(`"saved snapshot"`), srv.countLog("removing uncommitted snapshot"), srv.countLog("truncating torn WAL tail"), srv.countLog("snapshot damaged"))
}

// verify reads every key with one linearizable range and checks it against
// the model: an acknowledged value is there with its revision, or a later
// value that was sent; revisions never go back. It then takes what it read
// as acknowledged: once a linearizable read has returned after a restart,
// what the log held is committed and applied, so a put left unanswered
// is either there now or gone for good.
func verify(t *testing.T, srv *server, m *model, lastRev int64) (rev int64, keys int) {
	t.Helper()
	cli := srv.dial(t)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	resp, err := cli.Get(ctx, "kill/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	rev = resp.Header.Revision
	if rev < lastRev || rev < m.maxRev.Load() {
		t.Fatalf("revision went back: %d after a restart; %d was read before and %d acknowledged", rev, lastRev, m.maxRev.Load())
	}
	got := make(map[string]int64, len(resp.Kvs))
	values := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		got[string(kv.Key)] = kv.ModRevision
		values[string(kv.Key)] = string(kv.Value)
	}
	var lost []string
	for key, ks := range m.keys {
		v, present := values[key]
		switch {
		case !present && ks.acked != "":
			lost = append(lost, fmt.Sprintf("%s: acknowledged %.24q at revision %d, now missing", key, ks.acked, ks.rev))
		case !present:
		case v == ks.acked && got[key] == ks.rev:
		case v == ks.acked && got[key] > ks.rev && ks.retried:
			ks.rev = got[key]
		case v == ks.acked:
			lost = append(lost, fmt.Sprintf("%s: acknowledged at revision %d, now at revision %d", key, ks.rev, got[key]))
		case v == ks.pending && got[key] > ks.rev:
			ks.acked, ks.rev = v, got[key]
		default:
			lost = append(lost, fmt.Sprintf("%s: holds %.24q at revision %d; acknowledged %.24q at revision %d, pending %.24q",
				key, v, got[key], ks.acked, ks.rev, ks.pending))
		}
		ks.pending = ""
	}
	if len(lost) > 0 {
		slices.Sort(lost)
		t.Fatalf("%d keys lost acknowledged writes:\n%s", len(lost), strings.Join(lost[:min(len(lost), 20)], "\n"))
	}
	m.maxRev.Store(max(m.maxRev.Load(), rev))
	return rev, len(m.keys)
}

// write runs the writers for d, then kills the server while they write.
// A compactor keeps the history (and so the snapshots) bounded.
func write(t *testing.T, srv *server, m *model, next []int, d time.Duration, seed uint64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(next)+1)
	for w := range next {
		wg.Go(func() {
			if err := writer(ctx, []string{srv.client}, m, w, &next[w], seed, false); err != nil {
				errs <- err
			}
		})
	}
	wg.Go(func() { compactor(ctx, []string{srv.client}, m) })
	time.Sleep(d)
	srv.kill(t)
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// writer puts its keys in turn, one at a time, until a put fails (the
// server is gone), or, with retry, retries a failed put with the same
// value until it succeeds or ctx ends (a cluster lost a member). It
// returns an error only for a broken promise seen while running:
// revisions of its own answers going back.
func writer(ctx context.Context, endpoints []string, m *model, w int, next *int, seed uint64, retry bool) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: requestTimeout, Logger: nopLogger})
	if err != nil {
		return nil
	}
	defer cli.Close()
	pad := strings.Repeat(string(rune('a'+w%26)), max(*valueBytesFlag-40, 0))
	var last int64
	for ctx.Err() == nil {
		n := *next
		key := keyName(w, n%*keysFlag)
		ks := m.keys[key]
		value := fmt.Sprintf("w%d n%d s%x %s", w, n, seed, pad)
		ks.pending = value
		*next = n + 1
		timeout := requestTimeout
		if retry {
			timeout = retryTimeout
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		resp, err := cli.Put(rctx, key, value)
		cancel()
		retried := false
		for retry && err != nil && ctx.Err() == nil {
			retried = true
			time.Sleep(retryInterval)
			rctx, cancel := context.WithTimeout(ctx, retryTimeout)
			resp, err = cli.Put(rctx, key, value)
			cancel()
		}
		if err != nil {
			return nil
		}
		rev := resp.Header.Revision
		if rev <= last {
			return fmt.Errorf("writer %d: put answered at revision %d after one at %d", w, rev, last)
		}
		last = rev
		ks.acked, ks.rev, ks.pending, ks.retried = value, rev, "", retried
		m.acks.Add(1)
		for {
			cur := m.maxRev.Load()
			if rev <= cur || m.maxRev.CompareAndSwap(cur, rev) {
				break
			}
		}
	}
	return nil
}

// compactor compacts to a thousand revisions below the newest answer,
// every half second.
func compactor(ctx context.Context, endpoints []string, m *model) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: requestTimeout, Logger: nopLogger})
	if err != nil {
		return
	}
	defer cli.Close()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if rev := m.maxRev.Load() - 1000; rev > 1 {
			rctx, cancel := context.WithTimeout(ctx, requestTimeout)
			cli.Compact(rctx, rev)
			cancel()
		}
	}
}
