//go:build killtest

package killtest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Limits of starting and stopping a server process.
const (
	readyTimeout   = 120 * time.Second // from exec to the first answered linearizable Get
	pollInterval   = 5 * time.Millisecond
	stopTimeout    = 30 * time.Second // from SIGTERM to SIGKILL
	requestTimeout = 10 * time.Second
	// retryInterval and retryTimeout pace a cluster writer's retries of a
	// put that failed while a member was down.
	retryInterval = 20 * time.Millisecond
	retryTimeout  = 2 * time.Second
	logTailBytes  = 4096
)

// server is one server process on its data dir and loopback ports, which
// stay the same across restarts.
type server struct {
	bin    string
	dir    string
	client string // http://127.0.0.1:port
	peer   string
	// name and cluster are --name and --initial-cluster.
	name     string
	cluster  string
	extra    []string
	logPath  string
	cmd      *exec.Cmd
	exited   chan struct{}
	startsAt time.Time
}

func newServer(t *testing.T, bin, dir string, extra ...string) *server {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &server{
		bin: bin, dir: dir, extra: extra,
		client:  "http://" + freeAddr(t),
		peer:    "http://" + freeAddr(t),
		logPath: filepath.Join(dir, "server.log"),
		name:    "default",
	}
	s.cluster = s.name + "=" + s.peer
	// A test that fails leaves no process behind (cleanups run last
	// registered first, so this runs before the data dir is moved or
	// removed).
	t.Cleanup(func() {
		if s.cmd != nil {
			s.kill(t)
		}
	})
	return s
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// start execs the server; its output is appended to logPath.
func (s *server) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{
		"--name", s.name,
		"--data-dir", filepath.Join(s.dir, "data"),
		"--listen-client-urls", s.client,
		"--advertise-client-urls", s.client,
		"--listen-peer-urls", s.peer,
		"--initial-advertise-peer-urls", s.peer,
		"--initial-cluster", s.cluster,
	}, s.extra...)
	s.cmd = exec.Command(s.bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.startsAt = time.Now()
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func() {
		s.cmd.Wait()
		logf.Close()
		close(s.exited)
	}()
}

// waitReady polls until a linearizable Get is answered and returns the
// time from exec to that answer. It waits for the port to accept first:
// a gRPC client that dialed too early backs off for a second.
func (s *server) waitReady(t *testing.T) time.Duration {
	t.Helper()
	deadline := s.startsAt.Add(readyTimeout)
	for {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(s.client, "http://"), time.Second)
		if err == nil {
			c.Close()
			break
		}
		s.checkStarting(t, deadline, err)
		time.Sleep(pollInterval)
	}
	cli := s.dial(t)
	defer cli.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "readiness-probe")
		cancel()
		if err == nil {
			return time.Since(s.startsAt)
		}
		s.checkStarting(t, deadline, err)
		time.Sleep(pollInterval)
	}
}

// checkStarting fails the test if the server exited or the deadline passed.
func (s *server) checkStarting(t *testing.T, deadline time.Time, err error) {
	t.Helper()
	select {
	case <-s.exited:
		t.Fatalf("server exited while starting (%v):\n%s", s.cmd.ProcessState, s.logTail())
	default:
	}
	if time.Now().After(deadline) {
		t.Fatalf("server not ready after %v: %v\n%s", readyTimeout, err, s.logTail())
	}
}

func (s *server) dial(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{s.client},
		DialTimeout: requestTimeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// kill sends SIGKILL and waits for the process to be gone.
func (s *server) kill(t *testing.T) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

// stop sends SIGTERM, then SIGKILL after stopTimeout.
func (s *server) stop(t *testing.T) {
	t.Helper()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
		t.Errorf("server did not stop within %v of SIGTERM; killing it", stopTimeout)
		s.kill(t)
	}
}

func (s *server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return err.Error()
	}
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
	}
	return string(b)
}

// countLog counts the log lines containing substr.
func (s *server) countLog(substr string) int {
	f, err := os.Open(s.logPath)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			n++
		}
	}
	return n
}

// buildBasalt builds the module's binary into dir, unless BASALT_BIN names
// one.
func buildBasalt(t *testing.T, dir string) string {
	t.Helper()
	if bin := os.Getenv("BASALT_BIN"); bin != "" {
		return bin
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(dir, "basalt")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building basalt: %v\n%s", err, out)
	}
	return bin
}

var nopLogger = zap.NewNop()

func fmtDurations(ds []time.Duration) string {
	var b strings.Builder
	for i, d := range ds {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%.0fms", float64(d)/float64(time.Millisecond))
	}
	return b.String()
}
