// Command bench-vs-etcd drives basalt and etcd v3.7.3 with the same gRPC
// load and compares their throughput and latency (README.md).
//
//	bench-vs-etcd -basalt-bin B -etcd-bin E [-rounds 3 -duration 10s ...]
//	bench-vs-etcd -endpoint 127.0.0.1:2379 -workloads put/200 [-pid P]
//
// The first form starts the servers itself, on loopback with their data
// dirs side by side in one temporary folder, and alternates their runs;
// the second drives a server that is already running.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Limits of the servers' lifecycle.
const (
	startTimeout = 60 * time.Second
	stopTimeout  = 20 * time.Second
)

var errNotHealthy = errors.New("bench-vs-etcd: server did not become healthy")

func main() {
	var (
		basaltBin = flag.String("basalt-bin", "", "basalt binary")
		etcdBin   = flag.String("etcd-bin", "", "etcd v3.7.3 binary")
		endpoint  = flag.String("endpoint", "", "drive this running server (host:port) instead of starting any")
		pid       = flag.Int("pid", 0, "with -endpoint: the server's pid, to report its CPU use")
		dir       = flag.String("dir", "", "folder for data dirs and logs (default: a new temporary one, removed at the end)")
		rounds    = flag.Int("rounds", 3, "runs of each workload on each server")
		duration  = flag.Duration("duration", 10*time.Second, "measured window of each run")
		warmup    = flag.Duration("warmup", 2*time.Second, "load before each measured window")
		conns     = flag.Int("conns", 10, "gRPC connections (at most one per client)")
		workloads = flag.String("workloads", "put/1,put/200,txn-put/1,txn-put/200,range-l/100,range-s/100", "comma-separated op/clients; op is put, txn-put, range-l or range-s")
		keyBytes  = flag.Int("key-size", 8, "key bytes")
		valBytes  = flag.Int("val-size", 256, "value bytes")
		keySpace  = flag.Int("key-space", 100000, "distinct keys the puts write")
		quietMax  = flag.Float64("quiet-max", 0.15, "before each run, wait until other processes use at most this share of one core (0: do not wait)")
		quietWait = flag.Duration("quiet-wait", 2*time.Minute, "longest wait for a quiet machine; the run then goes ahead and is marked noisy")
		noisyMax  = flag.Float64("noisy-max", 0.3, "a run during which other processes used more than this share of one core is run again")
		retries   = flag.Int("retries", 4, "times a noisy run is run again before it is kept, marked with *")
		together  = flag.Bool("together", true, "keep both servers running side by side; false: start each run's server alone on a fresh data dir")
	)
	flag.Parse()
	var ws []workload
	for _, s := range strings.Split(*workloads, ",") {
		w, err := parseWorkload(strings.TrimSpace(s), *conns)
		if err != nil {
			fatal(err)
		}
		ws = append(ws, w)
	}
	base := loadConfig{warmup: *warmup, duration: *duration, keyBytes: *keyBytes, valBytes: *valBytes, keySpace: *keySpace}

	if *endpoint != "" {
		for _, w := range ws {
			cfg := base
			cfg.endpoint, cfg.workload, cfg.serverPID = *endpoint, w, *pid
			res, err := runLoad(cfg)
			if err != nil {
				fatal(err)
			}
			fmt.Printf("%-12s %s\n", w, res)
		}
		return
	}
	if *basaltBin == "" || *etcdBin == "" {
		fatal(errors.New("need -basalt-bin and -etcd-bin, or -endpoint"))
	}
	ownDir := *dir == ""
	if ownDir {
		d, err := os.MkdirTemp("", "bench-vs-etcd-")
		if err != nil {
			fatal(err)
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	b := &bench{
		dir:     *dir,
		ownDir:  ownDir,
		bins:    map[string]string{"basalt": *basaltBin, "etcd": *etcdBin},
		base:    base,
		servers: map[string]*server{},
		quiet:   quietConfig{maxShare: *quietMax, waitMax: *quietWait, noisyMax: *noisyMax, retries: *retries},
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigc
		b.interrupt()
	}()
	if err := b.run(ws, *rounds, *together); err != nil {
		b.stopAll()
		fatal(fmt.Errorf("%w (logs and data dirs kept in %s)", err, *dir))
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench-vs-etcd:", err)
	os.Exit(1)
}

// names are the servers compared, in the order of the table's columns.
var names = []string{"basalt", "etcd"}

type bench struct {
	dir    string
	ownDir bool // dir was made by this process and is removed at the end
	bins   map[string]string
	base   loadConfig
	quiet  quietConfig
	starts int // servers started so far, to name data dirs

	mu sync.Mutex
	// servers are the running servers, by name; written under mu, read
	// without it by the goroutine that writes it.
	servers map[string]*server
}

// quietConfig says how long to wait for other load on the machine to
// go away before a run; the machine is shared.
type quietConfig struct {
	maxShare float64 // of one core, used by processes other than the servers and this one
	waitMax  time.Duration
	noisyMax float64 // of one core, used by other processes during a run that is kept
	retries  int
}

// quietSampleDuration is how long a sample of the machine's load lasts.
const quietSampleDuration = time.Second

// waitQuiet waits until, over one sample, the processes other than this
// one and the running servers use at most q.maxShare of one core, or
// until q.waitMax has passed; it returns the last sample's share.
func (b *bench) waitQuiet() float64 {
	if b.quiet.maxShare <= 0 {
		return 0
	}
	deadline := time.Now().Add(b.quiet.waitMax)
	for {
		ours := func() time.Duration {
			t := selfCPU()
			for _, s := range b.servers {
				t += processCPU(s.cmd.Process.Pid)
			}
			return t
		}
		all0, ours0, t0 := machineCPU(), ours(), time.Now()
		time.Sleep(quietSampleDuration)
		share := (machineCPU() - all0 - (ours() - ours0)).Seconds() / time.Since(t0).Seconds()
		if share <= b.quiet.maxShare || time.Now().After(deadline) {
			return share
		}
	}
}

// run runs every workload rounds times on each server. Round r starts
// with basalt when r is even and with etcd when it is odd, so that a drift
// of the machine (page cache, growing data) falls on both.
func (b *bench) run(ws []workload, rounds int, together bool) error {
	results := map[string][]*result{} // by workload/server
	if together {
		for _, name := range names {
			if err := b.start(name); err != nil {
				return err
			}
		}
	}
	for r := range rounds {
		order := names
		if r%2 == 1 {
			order = []string{names[1], names[0]}
		}
		for _, w := range ws {
			for _, name := range order {
				if !together {
					if err := b.start(name); err != nil {
						return err
					}
				}
				res, err := b.runQuiet(name, w)
				if err != nil {
					return fmt.Errorf("%s %s: %w", name, w, err)
				}
				mark := " "
				if res.otherCPU() > b.quiet.noisyMax {
					mark = "*"
				}
				fmt.Printf("round %d %s %-12s %-6s %s\n", r+1, mark, w, name, res)
				key := w.String() + "/" + name
				results[key] = append(results[key], res)
				if !together {
					if err := b.stop(name); err != nil {
						return err
					}
				}
			}
		}
	}
	b.stopAll()
	printTable(os.Stdout, ws, results)
	return nil
}

// runQuiet runs w against the named server once the machine is quiet,
// and again, up to b.quiet.retries times, while other processes disturb
// the run; it returns the last run.
func (b *bench) runQuiet(name string, w workload) (*result, error) {
	for try := 0; ; try++ {
		if share := b.waitQuiet(); share > b.quiet.maxShare {
			fmt.Printf("machine still busy after %v (other processes use %.0f%% of a core); running anyway\n", b.quiet.waitMax, 100*share)
		}
		s := b.servers[name]
		cfg := b.base
		cfg.endpoint, cfg.workload, cfg.serverPID = s.endpoint, w, s.cmd.Process.Pid
		res, err := runLoad(cfg)
		if err != nil || res.otherCPU() <= b.quiet.noisyMax || try >= b.quiet.retries {
			return res, err
		}
		fmt.Printf("        %-12s %-6s %s: noisy, again\n", w, name, res)
	}
}

// printTable prints, per workload, the median over the rounds of each
// server's ops/s, p50 and p99, and basalt/etcd ratios.
func printTable(out io.Writer, ws []workload, results map[string][]*result) {
	fmt.Fprintf(out, "\nmedian of %d rounds; other cpu is what other processes used during the runs\n\n", len(results[ws[0].String()+"/basalt"]))
	fmt.Fprintln(out, "| workload | conns | basalt ops/s | etcd ops/s | ops ratio b/e | basalt p50 | etcd p50 | basalt p99 | etcd p99 | p99 ratio b/e | server cpu µs/op b / e | other cpu b / e |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, w := range ws {
		var ops, p50, p99, cpu, other [2]float64
		for i, name := range names {
			rs := results[w.String()+"/"+name]
			ops[i] = median(rs, func(r *result) float64 { return r.opsPerSec() })
			p50[i] = median(rs, func(r *result) float64 { return r.lat.quantile(0.50).Seconds() })
			p99[i] = median(rs, func(r *result) float64 { return r.lat.quantile(0.99).Seconds() })
			cpu[i] = median(rs, func(r *result) float64 { return r.serverCPU.Seconds() / float64(max(r.lat.n, 1)) })
			other[i] = median(rs, (*result).otherCPU)
		}
		fmt.Fprintf(out, "| %s | %d | %.0f | %.0f | **%.2f** | %s | %s | %s | %s | **%.2f** | %.0f / %.0f | %.0f%% / %.0f%% |\n",
			w, w.conns, ops[0], ops[1], ops[0]/ops[1],
			fmtDur(secs(p50[0])), fmtDur(secs(p50[1])), fmtDur(secs(p99[0])), fmtDur(secs(p99[1])), p99[0]/p99[1],
			1e6*cpu[0], 1e6*cpu[1], 100*other[0], 100*other[1])
	}
}

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func median(rs []*result, f func(*result) float64) float64 {
	if len(rs) == 0 {
		return 0
	}
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// server is one running member.
type server struct {
	cmd      *exec.Cmd
	log      *os.File
	endpoint string
	exited   chan struct{} // closed when cmd.Wait returns
}

// start starts the named server on fresh loopback ports and a fresh data
// dir under b.dir, with the flags etcd's own single-member setup uses, and
// waits for /health.
func (b *bench) start(name string) error {
	b.starts++
	client, peer := freePort(), freePort()
	if client == 0 || peer == 0 {
		return errors.New("bench-vs-etcd: no free loopback port")
	}
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", client)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
	dataDir := filepath.Join(b.dir, fmt.Sprintf("%s-%d.data", name, b.starts))
	log, err := os.Create(filepath.Join(b.dir, fmt.Sprintf("%s-%d.log", name, b.starts)))
	if err != nil {
		return err
	}
	cmd := exec.Command(b.bins[name],
		"--name", "default",
		"--data-dir", dataDir,
		"--listen-client-urls", clientURL,
		"--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL,
		"--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL,
	)
	cmd.Stdout, cmd.Stderr = log, log
	// A server must not outlive the benchmark, however it ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return err
	}
	s := &server{cmd: cmd, log: log, endpoint: fmt.Sprintf("127.0.0.1:%d", client), exited: make(chan struct{})}
	go func() { cmd.Wait(); close(s.exited) }()
	b.mu.Lock()
	b.servers[name] = s
	b.mu.Unlock()
	if err := waitHealthy(clientURL, s.exited); err != nil {
		return fmt.Errorf("%s (log %s): %w", name, log.Name(), err)
	}
	fmt.Printf("started %s pid %d on %s, data dir %s\n", name, cmd.Process.Pid, s.endpoint, dataDir)
	return nil
}

func waitHealthy(url string, exited <-chan struct{}) error {
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("%w: it exited", errNotHealthy)
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := http.Get(url + "/health")
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), `"health":"true"`) {
			return nil
		}
	}
	return fmt.Errorf("%w within %v", errNotHealthy, startTimeout)
}

// stop stops the named server with SIGTERM, or SIGKILL after
// stopTimeout.
func (b *bench) stop(name string) error {
	s := b.servers[name]
	b.mu.Lock()
	delete(b.servers, name)
	b.mu.Unlock()
	defer s.log.Close()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return nil
	case <-time.After(stopTimeout):
		s.cmd.Process.Kill()
		<-s.exited
		return fmt.Errorf("%s did not stop within %v of SIGTERM", name, stopTimeout)
	}
}

// interrupt stops the servers and removes b.dir when the benchmark is
// interrupted, and exits.
func (b *bench) interrupt() {
	fmt.Fprintln(os.Stderr, "bench-vs-etcd: interrupted; stopping the servers")
	b.mu.Lock()
	running := make([]*server, 0, len(b.servers))
	for _, s := range b.servers {
		running = append(running, s)
	}
	b.mu.Unlock()
	for _, s := range running {
		s.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, s := range running {
		select {
		case <-s.exited:
		case <-time.After(stopTimeout):
			s.cmd.Process.Kill()
		}
	}
	if b.ownDir {
		os.RemoveAll(b.dir)
	}
	os.Exit(1)
}

func (b *bench) stopAll() {
	for _, name := range names {
		if _, ok := b.servers[name]; ok {
			if err := b.stop(name); err != nil {
				fmt.Fprintln(os.Stderr, "bench-vs-etcd:", err)
			}
		}
	}
}

// freePort is a loopback port nobody listens on right now, or 0.
func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
