//go:build difftest

// Package difftest sends the same seeded random request sequence to etcd
// v3.7.3 and to a candidate server (basalt, or a second etcd to prove the
// harness) and compares every answer, over three client paths: raw gRPC,
// etcdctl and the HTTP/JSON gateway. See README.md for how to run it.
package difftest

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

var (
	seedFlag    = flag.Int64("seed", 1, "seed of the random request sequence")
	opsFlag     = flag.Int("ops", 0, "requests per test (0: the test's own default)")
	againstFlag = flag.String("against", "basalt", "candidate server: basalt (BASALT_BIN, or built from the module) or etcd (a second ETCD_BIN process); SECOND_BIN overrides both")
	leasesFlag  = flag.Bool("leases", true, "mix LeaseGrant/LeaseRevoke with fixed IDs into the gRPC and gateway sequences")
	logOpsFlag  = flag.Bool("logops", false, "log every request and the reference's answer")
)

// Limits. The default sequence lengths are modest; etcdctl forks a process
// per request, so its test is the shortest.
const (
	grpcOpsDefault    = 2000
	etcdctlOpsDefault = 300
	gatewayOpsDefault = 1000

	startTimeout      = 60 * time.Second // until a member answers a linearizable Range
	stopTimeout       = 10 * time.Second // from SIGTERM to SIGKILL
	requestTimeout    = 30 * time.Second
	logTailBytes      = 4096 // of a member's log, shown when it fails
	shownBytesMax     = 64   // of a bytes field in a report
	shownBodyBytesMax = 4096 // of an HTTP body or etcdctl stdin in a report

	// etcd v3.7.3's request limits, which the oversized requests straddle.
	maxRequestBytes  = 1536 * 1024                // --max-request-bytes default
	grpcRecvBytesMax = maxRequestBytes + 512*1024 // gRPC MaxRecvMsgSize
	maxTxnOps        = 128                        // --max-txn-ops default
	sizeMarginBytes  = 1024                       // keeps sizes clear of the exact raft-entry framing
	leaseTTLSeconds  = 3600                       // leases never expire during a run
	leaseTTLTooLarge = 9000000001                 // one above MaxLeaseTTL

	// Shape of generated requests.
	txnDepthMax         = 2 // nesting of generated txns
	branchOpsMax        = 4 // ops per txn branch
	comparesMax         = 3 // compares per txn
	randomValueBytesMax = 40
)

// binaries are resolved once in TestMain.
var binaries struct {
	etcd      string // the reference server
	etcdctl   string // the reference etcdctl; empty if none was found
	candidate string // the server compared with the reference
	candLabel string // how reports name the candidate
}

func TestMain(m *testing.M) {
	flag.Parse()
	work, err := os.MkdirTemp("", "difftest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "difftest:", err)
		os.Exit(2)
	}
	if err := resolveBinaries(work); err != nil {
		fmt.Fprintln(os.Stderr, "difftest:", err)
		os.RemoveAll(work)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "difftest: reference %s, candidate %s (%s), seed %d\n",
		binaries.etcd, binaries.candidate, binaries.candLabel, *seedFlag)
	code := m.Run()
	os.RemoveAll(work)
	os.Exit(code)
}

// resolveBinaries finds etcd and etcdctl, and the candidate: SECOND_BIN,
// a second etcd, BASALT_BIN, or basalt built from this module into work.
func resolveBinaries(work string) error {
	binaries.etcd = os.Getenv("ETCD_BIN")
	if binaries.etcd == "" {
		p, err := exec.LookPath("etcd")
		if err != nil {
			return fmt.Errorf("ETCD_BIN is not set and no etcd is on PATH: run scripts/difftest/run.sh, which builds etcd v3.7.3")
		}
		binaries.etcd = p
	}
	binaries.etcdctl = os.Getenv("ETCDCTL_BIN")
	if binaries.etcdctl == "" {
		if p, err := exec.LookPath("etcdctl"); err == nil {
			binaries.etcdctl = p
		}
	}
	switch {
	case os.Getenv("SECOND_BIN") != "":
		binaries.candidate, binaries.candLabel = os.Getenv("SECOND_BIN"), "SECOND_BIN"
	case *againstFlag == "etcd":
		binaries.candidate, binaries.candLabel = binaries.etcd, "etcd"
	case *againstFlag == "basalt" && os.Getenv("BASALT_BIN") != "":
		binaries.candidate, binaries.candLabel = os.Getenv("BASALT_BIN"), "basalt"
	case *againstFlag == "basalt":
		bin, err := buildBasalt(work)
		if err != nil {
			return err
		}
		binaries.candidate, binaries.candLabel = bin, "basalt"
	default:
		return fmt.Errorf("-against=%q: want basalt or etcd", *againstFlag)
	}
	return nil
}

// buildBasalt builds the module's binary from the module root.
func buildBasalt(work string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
		return "", fmt.Errorf("cannot find the module root (go env GOMOD: %q, %v)", out, err)
	}
	bin := filepath.Join(work, "basalt")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/basaltdb/basalt")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("basalt does not build (%v); set BASALT_BIN, or run -against=etcd to check the harness:\n%s", err, msg)
	}
	return bin, nil
}

func opsFor(def int) int {
	if *opsFlag > 0 {
		return *opsFlag
	}
	return def
}

// reproduce is a command line that replays test's sequence up to and
// including op index i.
func reproduce(test string, i int) string {
	env := []string{"ETCD_BIN=" + binaries.etcd}
	if test == "TestEtcdctl" {
		env = append(env, "ETCDCTL_BIN="+binaries.etcdctl)
	}
	against := *againstFlag
	switch binaries.candLabel {
	case "SECOND_BIN":
		env = append(env, "SECOND_BIN="+binaries.candidate)
	case "basalt":
		if b := os.Getenv("BASALT_BIN"); b != "" {
			env = append(env, "BASALT_BIN="+b)
		}
	}
	return fmt.Sprintf("%s go test -tags difftest ./scripts/difftest -count=1 -v -run '^%s$' -seed %d -ops %d -against=%s -leases=%t",
		strings.Join(env, " "), test, *seedFlag, i+1, against, *leasesFlag)
}

// tally counts compared requests by kind and by the reference's outcome.
type tally map[string]int

func (t tally) add(kind, outcome string) { t[kind+" -> "+outcome]++ }

func (t tally) String() string {
	keys := make([]string, 0, len(t))
	total := 0
	for k, n := range t {
		keys = append(keys, k)
		total += n
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "compared %d requests:\n", total)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %6d  %s\n", t[k], k)
	}
	return b.String()
}

// mismatch fails the test with everything needed to understand and replay
// the first difference.
func mismatch(t *testing.T, sum tally, i int, request, ref, cand string) {
	t.Helper()
	t.Log(sum.String())
	t.Fatalf("MISMATCH seed=%d op #%d\nrequest:\n%s\n--- reference (etcd %s):\n%s\n--- candidate (%s %s):\n%s\nreproduce:\n  %s",
		*seedFlag, i, indent(request), binaries.etcd, indent(ref), binaries.candLabel, binaries.candidate, indent(cand),
		reproduce(t.Name(), i))
}

// logOp logs request i and the reference's answer under -logops.
func logOp(t *testing.T, i int, request, ref string) {
	t.Helper()
	if *logOpsFlag {
		t.Logf("#%d\n%s\n=>\n%s", i, indent(request), indent(ref))
	}
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}
