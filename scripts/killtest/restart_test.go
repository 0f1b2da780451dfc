//go:build killtest

package killtest

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	benchKeysFlag     = flag.Int("bench-keys", 1_000_000, "keys loaded before measuring restarts")
	benchValueFlag    = flag.Int("bench-value-bytes", 100, "bytes per loaded value")
	benchTxnOpsFlag   = flag.Int("bench-txn-ops", 100, "puts per loading txn")
	benchLoadersFlag  = flag.Int("bench-loaders", 16, "concurrent loading clients")
	benchRestartsFlag = flag.Int("bench-restarts", 3, "restarts measured after each kind of stop")
)

// TestRestartTime loads -bench-keys keys into a fresh server, then
// measures, several times, the time from exec to the first answered
// linearizable Get after a SIGTERM and after a SIGKILL. It runs basalt,
// and etcd too when ETCD_BIN names its binary.
func TestRestartTime(t *testing.T) {
	root := t.TempDir()
	if *keepFlag {
		var err error
		if root, err = os.MkdirTemp("", "restarttime-"); err != nil {
			t.Fatal(err)
		}
		defer t.Logf("data dirs and server logs kept in %s", root)
	}
	servers := []struct{ name, bin string }{{"basalt", buildBasalt(t, root)}}
	if bin := os.Getenv("ETCD_BIN"); bin != "" {
		servers = append(servers, struct{ name, bin string }{"etcd", bin})
	}
	for _, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			dir := filepath.Join(root, s.name+"-member")
			srv := newServer(t, s.bin, dir)
			srv.start(t)
			t.Logf("fresh start: %v", srv.waitReady(t).Round(time.Millisecond))
			took := load(t, srv)
			t.Logf("loaded %d keys of %d-byte values in %v (%.0f keys/s); data dir %s",
				*benchKeysFlag, *benchValueFlag, took.Round(time.Millisecond), float64(*benchKeysFlag)/took.Seconds(), dirSize(t, filepath.Join(dir, "data")))
			if s.name == "basalt" {
				// The snapshot due during the load is written in the
				// background: let it finish, so the restarts load it.
				deadline := time.Now().Add(5 * time.Minute)
				for srv.countLog(`"saved snapshot"`) == 0 && time.Now().Before(deadline) {
					time.Sleep(100 * time.Millisecond)
				}
				for _, line := range lastLines(srv.logPath, `"saved snapshot"`, 1) {
					t.Logf("snapshot: %s", line)
				}
			}
			for _, stop := range []string{"SIGTERM", "SIGKILL"} {
				var ds []time.Duration
				for range *benchRestartsFlag {
					if stop == "SIGTERM" {
						srv.stop(t)
					} else {
						srv.kill(t)
					}
					srv.start(t)
					ds = append(ds, srv.waitReady(t))
					checkCount(t, srv)
				}
				slices.Sort(ds)
				t.Logf("restart after %s to first answered Get: %s (median %v)", stop, fmtDurations(ds), ds[len(ds)/2].Round(time.Millisecond))
			}
			srv.stop(t)
			if s.name == "basalt" {
				for _, line := range lastLines(srv.logPath, `"recovered log"`, 1) {
					t.Logf("recovery: %s", line)
				}
			}
		})
	}
}

// load puts -bench-keys keys with txns of -bench-txn-ops puts from
// -bench-loaders clients.
func load(t *testing.T, srv *server) time.Duration {
	t.Helper()
	start := time.Now()
	value := strings.Repeat("v", *benchValueFlag)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, *benchLoadersFlag)
	for range *benchLoadersFlag {
		wg.Go(func() {
			cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.client}, DialTimeout: requestTimeout, Logger: nopLogger})
			if err != nil {
				errs <- err
				return
			}
			defer cli.Close()
			for {
				lo := int(next.Add(int64(*benchTxnOpsFlag))) - *benchTxnOpsFlag
				if lo >= *benchKeysFlag {
					return
				}
				hi := min(lo+*benchTxnOpsFlag, *benchKeysFlag)
				ops := make([]clientv3.Op, 0, hi-lo)
				for i := lo; i < hi; i++ {
					ops = append(ops, clientv3.OpPut(benchKey(i), value))
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				_, err := cli.Txn(ctx).Then(ops...).Commit()
				cancel()
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return time.Since(start)
}

func benchKey(i int) string { return fmt.Sprintf("bench/%08d", i) }

// checkCount makes sure the restarted server holds every loaded key.
func checkCount(t *testing.T, srv *server) {
	t.Helper()
	cli := srv.dial(t)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := cli.Get(ctx, "bench/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != int64(*benchKeysFlag) {
		t.Fatalf("restarted server holds %d keys, want %d", resp.Count, *benchKeysFlag)
	}
}

func dirSize(t *testing.T, dir string) string {
	t.Helper()
	var n int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// lastLines returns the last n log lines containing substr, cut to their
// message fields.
func lastLines(path, substr string, n int) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	drop := regexp.MustCompile(`"(level|ts|caller|logger)":"[^"]*",?`)
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(line, substr) {
			out = append(out, drop.ReplaceAllString(line, ""))
		}
	}
	return out[max(len(out)-n, 0):]
}
