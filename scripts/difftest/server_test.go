//go:build difftest

package difftest

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// member is one server process with its own data dir and loopback ports.
type member struct {
	label   string // "reference" or "candidate"
	bin     string
	dir     string // data dir and log live here
	addr    string // host:port of the client URL
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has been reaped
	conn    *grpc.ClientConn
}

// startPair starts the reference etcd and the candidate with the same flags
// and stops both when the test ends. Their directories are kept, and named,
// if the test fails.
func startPair(t *testing.T) (ref, cand *member) {
	t.Helper()
	root, err := os.MkdirTemp("", "difftest-"+t.Name()+"-")
	if err != nil {
		t.Fatal(err)
	}
	ref = startMember(t, "reference", binaries.etcd, filepath.Join(root, "reference"))
	cand = startMember(t, "candidate", binaries.candidate, filepath.Join(root, "candidate"))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("member logs and data kept in %s", root)
			return
		}
		os.RemoveAll(root)
	})
	return ref, cand
}

func startMember(t *testing.T, label, bin, dir string) *member {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	clientPort, peerPort := freePort(t), freePort(t)
	m := &member{
		label:   label,
		bin:     bin,
		dir:     dir,
		addr:    fmt.Sprintf("127.0.0.1:%d", clientPort),
		logPath: filepath.Join(dir, "member.log"),
		exited:  make(chan struct{}),
	}
	clientURL := "http://" + m.addr
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	args := []string{
		"--name", "difftest",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", clientURL,
		"--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL,
		"--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "difftest=" + peerURL,
	}
	logf, err := os.Create(m.logPath)
	if err != nil {
		t.Fatal(err)
	}
	m.cmd = exec.Command(bin, args...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("%s: start %s: %v", label, bin, err)
	}
	go func() {
		m.cmd.Wait()
		logf.Close()
		close(m.exited)
	}()
	t.Cleanup(m.stop)
	m.conn, err = grpc.NewClient(m.addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.MaxCallSendMsgSize(math.MaxInt32)))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.waitReady(); err != nil {
		t.Fatalf("%s (%s %s) did not become ready: %v\nlog tail (%s):\n%s", label, bin, strings.Join(args, " "), err, m.logPath, m.logTail())
	}
	return m
}

// waitReady polls a linearizable Range until it succeeds, which needs a
// leader and an applied store.
func (m *member) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	kv := pb.NewKVClient(m.conn)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-m.exited:
			return fmt.Errorf("process exited: %v", m.cmd.ProcessState)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, last = kv.Range(ctx, &pb.RangeRequest{Key: []byte("difftest-ready")})
		cancel()
		if last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("no answer in %v: %w", startTimeout, last)
}

// stop sends SIGTERM, then SIGKILL if the process outlives stopTimeout.
func (m *member) stop() {
	if m.conn != nil {
		m.conn.Close()
	}
	select {
	case <-m.exited:
		return
	default:
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(stopTimeout):
		m.cmd.Process.Kill()
		<-m.exited
	}
}

// alive reports an error if the process has exited.
func (m *member) alive() error {
	select {
	case <-m.exited:
		return fmt.Errorf("%s exited (%v); log tail (%s):\n%s", m.label, m.cmd.ProcessState, m.logPath, m.logTail())
	default:
		return nil
	}
}

// currentRev reads the member's store revision without changing it.
func (m *member) currentRev() (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := pb.NewKVClient(m.conn).Range(ctx, &pb.RangeRequest{Key: []byte{0}, CountOnly: true})
	if err != nil {
		return 0, err
	}
	return resp.GetHeader().GetRevision(), nil
}

func (m *member) logTail() string {
	b, err := os.ReadFile(m.logPath)
	if err != nil {
		return err.Error()
	}
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
	}
	return string(b)
}

// freePort asks the kernel for an unused loopback port. Another process can
// take it before the member binds it; the member then fails to start and
// says so.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
