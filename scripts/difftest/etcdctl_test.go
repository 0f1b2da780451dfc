//go:build difftest

package difftest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestEtcdctl runs the same etcdctl command lines against both servers and
// compares exit code, stdout and stderr, with the top-level header's
// cluster and member IDs and raft term masked, and etcdctl's client log
// lines cut down to their level, message, method and error.
func TestEtcdctl(t *testing.T) {
	if binaries.etcdctl == "" {
		t.Fatal("ETCDCTL_BIN is not set and no etcdctl is on PATH: run scripts/difftest/run.sh, which builds etcdctl v3.7.3")
	}
	n := opsFor(etcdctlOpsDefault)
	ref, cand := startPair(t)
	g := newGen(*seedFlag, false, false)
	sum := tally{}
	for i := range n {
		c := g.ctlOp()
		refOut, err := c.run(ref.addr)
		if err == nil {
			err = ref.alive()
		}
		if err != nil {
			t.Fatalf("op #%d (seed %d): the reference failed on:\n%s\n%v", i, *seedFlag, c.String(), err)
		}
		candOut, err := c.run(cand.addr)
		if err == nil {
			err = cand.alive()
		}
		if err != nil {
			mismatch(t, sum, i, c.String(), refOut.String(), err.Error())
		}
		if refOut.normal() != candOut.normal() {
			mismatch(t, sum, i, c.String(), refOut.normal(), candOut.normal())
		}
		logOp(t, i, c.String(), refOut.String())
		sum.add(c.kind, refOut.outcome())
		rev, err := ref.currentRev()
		if err != nil {
			t.Fatalf("op #%d: reading the reference's revision: %v", i, err)
		}
		g.rev = rev
		if c.compactRev != 0 && refOut.exit == 0 {
			g.compacted = c.compactRev
		}
	}
	t.Log(sum.String())
}

// ctlOp is one etcdctl invocation.
type ctlOp struct {
	kind       string
	args       []string // after the global flags
	stdin      string
	compactRev int64 // the revision of a compaction command, else 0
}

func (c ctlOp) String() string {
	var b strings.Builder
	b.WriteString("etcdctl --endpoints=<member>")
	for _, a := range c.args {
		b.WriteString(" " + strconv.Quote(a))
	}
	if c.stdin != "" {
		in := c.stdin
		if len(in) > shownBodyBytesMax {
			in = fmt.Sprintf("%s...(%d bytes)", in[:shownBodyBytesMax/8], len(in))
		}
		fmt.Fprintf(&b, " <<'EOF'\n%sEOF", in)
	}
	return b.String()
}

// ctlResult is what one etcdctl run printed.
type ctlResult struct {
	exit           int
	stdout, stderr string
}

func (c ctlOp) run(addr string) (ctlResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*requestTimeout)
	defer cancel()
	args := append([]string{"--endpoints=" + addr, "--command-timeout=" + requestTimeout.String()}, c.args...)
	cmd := exec.CommandContext(ctx, binaries.etcdctl, args...)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "ETCDCTL_") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Stdin = strings.NewReader(c.stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return ctlResult{exit.ExitCode(), stdout.String(), stderr.String()}, nil
	case err != nil:
		return ctlResult{}, err
	}
	return ctlResult{0, stdout.String(), stderr.String()}, nil
}

// headerIDs match the member-specific header fields in etcdctl's json and
// fields output; only the first match of each, the top-level header, is
// masked, since etcd leaves them zero in sub-responses.
var headerIDs = []*regexp.Regexp{
	regexp.MustCompile(`"cluster_id":\d+`),
	regexp.MustCompile(`"member_id":\d+`),
	regexp.MustCompile(`"raft_term":\d+`),
	regexp.MustCompile(`"ClusterID" : \d+`),
	regexp.MustCompile(`"MemberID" : \d+`),
	regexp.MustCompile(`"RaftTerm" : \d+`),
}

// normal is the result as compared.
func (r ctlResult) normal() string {
	out := r.stdout
	for _, re := range headerIDs {
		if loc := re.FindStringIndex(out); loc != nil {
			m := out[loc[0]:loc[1]]
			out = out[:loc[0]] + m[:strings.LastIndexAny(m, ": ")+1] + "<masked>" + out[loc[1]:]
		}
	}
	var errLines []string
	for _, line := range strings.Split(strings.TrimRight(r.stderr, "\n"), "\n") {
		errLines = append(errLines, normalLogLine(line))
	}
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.exit, out, strings.Join(errLines, "\n"))
}

// normalLogLine keeps the parts of a client log line that come from the
// server: the client's timestamps, addresses and pointers do not.
func normalLogLine(line string) string {
	if !strings.HasPrefix(line, `{"level":`) {
		return line
	}
	var l struct {
		Level  string `json:"level"`
		Msg    string `json:"msg"`
		Method string `json:"method"`
		Error  string `json:"error"`
	}
	if json.Unmarshal([]byte(line), &l) != nil {
		return line
	}
	return fmt.Sprintf("log level=%s msg=%q method=%s error=%q", l.Level, l.Msg, l.Method, l.Error)
}

func (r ctlResult) outcome() string {
	if r.exit == 0 {
		return "exit 0"
	}
	for _, line := range strings.Split(r.stderr, "\n") {
		if msg, ok := strings.CutPrefix(line, "Error: "); ok {
			msg, _, _ = strings.Cut(msg, " (")
			return fmt.Sprintf("exit %d %s", r.exit, msg)
		}
	}
	return fmt.Sprintf("exit %d", r.exit)
}

func (r ctlResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.exit, r.stdout, r.stderr)
}

// ctlOp draws the next etcdctl command.
func (g *gen) ctlOp() ctlOp {
	var c ctlOp
	switch n := g.r.IntN(100); {
	case n < 25:
		c = g.ctlPut()
	case n < 55:
		c = g.ctlGet()
	case n < 67:
		c = g.ctlDel()
	case n < 93:
		c = g.ctlTxn()
	case n < 98:
		c = g.ctlCompact()
	default:
		c = g.ctlOversized()
	}
	switch n := g.r.IntN(100); {
	case n < 40:
		c.args = append(c.args, "-w", "json")
	case n < 60:
		c.args = append(c.args, "-w", "fields")
	case n < 80:
		c.args = append(c.args, "-w", "simple")
	}
	return c
}

func (g *gen) ctlKey() string {
	if g.wild(0.03) {
		return ""
	}
	return string(g.key())
}

// ctlPutArgs draws a put's flags, key and value; hasValue is false when
// the value is left out (--ignore-value, or read from stdin).
func (g *gen) ctlPutArgs() (flags []string, key, value string, hasValue bool) {
	flags = []string{"put"}
	if g.p(0.3) {
		flags = append(flags, "--prev-kv")
	}
	ignoreValue := g.wild(0.08)
	if ignoreValue {
		flags = append(flags, "--ignore-value")
	}
	if g.wild(0.08) {
		flags = append(flags, "--ignore-lease")
	}
	if g.wild(0.1) {
		flags = append(flags, fmt.Sprintf("--lease=%x", leaseUnknown))
	}
	return flags, g.ctlKey(), string(g.value()), !ignoreValue || g.p(0.1)
}

func (g *gen) ctlPut() ctlOp {
	flags, key, value, hasValue := g.ctlPutArgs()
	switch {
	case hasValue && g.p(0.1):
		return ctlOp{kind: "put-stdin", args: append(flags, key), stdin: value}
	case hasValue:
		return ctlOp{kind: "put", args: append(flags, key, value)}
	}
	return ctlOp{kind: "put", args: append(flags, key)}
}

// ctlRange appends a key and how far the command reaches from it.
func (g *gen) ctlRange(args []string, rangeFlag string) []string {
	switch n := g.r.IntN(100); {
	case n < 45:
		return append(args, g.ctlKey())
	case n < 65:
		return append(args, "--prefix", g.ctlKey())
	case n < 75:
		return append(args, "--from-key", g.ctlKey())
	case n < 82:
		return append(args, "--prefix", "")
	default:
		if rangeFlag != "" {
			args = append(args, rangeFlag)
		}
		return append(args, g.ctlKey(), string(g.key()))
	}
}

func (g *gen) ctlGetArgs() []string {
	args := g.ctlRange([]string{"get"}, "")
	if g.p(0.3) {
		args = append(args, fmt.Sprintf("--limit=%d", pick[int64](g, 1, 2, 3, 100)))
	}
	if rev := g.readRev(); rev > 0 {
		args = append(args, fmt.Sprintf("--rev=%d", rev))
	}
	if g.p(0.35) {
		args = append(args, "--order="+pick(g, "ASCEND", "DESCEND", "ascend", ""))
		args = append(args, "--sort-by="+pick(g, "CREATE", "KEY", "MODIFY", "VALUE", "VERSION", ""))
	}
	if g.wild(0.02) {
		args = append(args, "--sort-by=SIDEWAYS")
	}
	if g.p(0.3) {
		args = append(args, "--consistency="+pick(g, "s", "l"))
	}
	switch n := g.r.IntN(100); {
	case n < 12:
		args = append(args, "--keys-only")
	case n < 20:
		args = append(args, "--count-only")
	case n < 25:
		args = append(args, "--print-value-only")
	}
	if g.p(0.12) {
		// etcdctl itself rejects min > max; it is drawn only now and then.
		for _, f := range [][2]string{{"--min-mod-rev", "--max-mod-rev"}, {"--min-create-rev", "--max-create-rev"}} {
			lo, hi := g.anyRev(), g.anyRev()
			if lo > hi && !g.wild(0.1) {
				lo, hi = hi, lo
			}
			if g.p(0.6) {
				args = append(args, fmt.Sprintf("%s=%d", f[0], lo))
			}
			if g.p(0.6) {
				args = append(args, fmt.Sprintf("%s=%d", f[1], hi))
			}
		}
	}
	return args
}

func (g *gen) ctlGet() ctlOp { return ctlOp{kind: "get", args: g.ctlGetArgs()} }

func (g *gen) ctlDelArgs() []string {
	args := g.ctlRange([]string{"del"}, "--range")
	if g.p(0.4) {
		args = append(args, "--prev-kv")
	}
	return args
}

func (g *gen) ctlDel() ctlOp { return ctlOp{kind: "del", args: g.ctlDelArgs()} }

// ctlTxn writes a txn in etcdctl's stdin format: compares, a blank line,
// success ops, a blank line, failure ops, a blank line.
func (g *gen) ctlTxn() ctlOp {
	g.tame = g.p(0.6)
	defer func() { g.tame = false }()
	c := ctlOp{kind: "txn", args: []string{"txn"}}
	if g.p(0.2) {
		c.args = append(c.args, "-i")
	}
	var in strings.Builder
	for range g.r.IntN(comparesMax + 1) {
		target := pick(g, "ver", "version", "c", "create", "m", "mod", "val", "value")
		var val string
		switch target {
		case "ver", "version":
			val = strconv.Itoa(g.r.IntN(5))
		case "val", "value":
			val = string(g.value())
		default:
			val = strconv.FormatInt(g.anyRev(), 10)
		}
		fmt.Fprintf(&in, "%s(%q) %s %q\n", target, g.ctlKey(), pick(g, "=", "!=", "<", ">"), val)
	}
	readOnly := g.p(0.15)
	if readOnly {
		c.kind = "txn-read-only"
	}
	var branches [2][][]string
	fromKey := false
	for i := range branches {
		b := &branch{clean: g.p(0.7), used: map[string]bool{}}
		for range g.r.IntN(branchOpsMax + 1) {
			args := g.ctlTxnOp(b, readOnly)
			fromKey = fromKey || isFromKeyDel(args)
			branches[i] = append(branches[i], args)
		}
	}
	for _, ops := range branches {
		in.WriteString("\n")
		for _, args := range ops {
			if fromKey {
				args = putToGet(args)
			}
			quoted := make([]string, len(args))
			for i, a := range args {
				quoted[i] = strconv.Quote(a)
			}
			in.WriteString(strings.Join(quoted, " ") + "\n")
		}
	}
	in.WriteString("\n")
	c.stdin = in.String()
	return c
}

func (g *gen) ctlTxnOp(b *branch, readOnly bool) []string {
	var args []string
	switch n := g.r.IntN(100); {
	case readOnly || n < 35:
		args = g.ctlGetArgs()
	case n < 75:
		flags, key, value, hasValue := g.ctlPutArgs()
		if b.clean {
			if k := b.freshKey(g); k != nil {
				key, hasValue = string(k), true
			}
		}
		args = append(flags, key)
		if hasValue {
			args = append(args, value)
		}
	default:
		args = g.ctlDelArgs()
		if b.clean {
			if k := b.freshKey(g); k != nil {
				args = []string{"del", string(k)}
			}
		}
	}
	return args
}

// isFromKeyDel reports whether args delete through a from-key range; see
// fromKeyDelete for the etcd crashes this avoids.
func isFromKeyDel(args []string) bool {
	if args[0] != "del" {
		return false
	}
	for i, a := range args {
		if a == "--from-key" || a == "--prefix" && i+1 < len(args) && args[i+1] == "" {
			return true
		}
	}
	return false
}

// putToGet turns a put into a get of its key.
func putToGet(args []string) []string {
	if args[0] != "put" {
		return args
	}
	for _, a := range args[1:] {
		if !strings.HasPrefix(a, "--") {
			return []string{"get", a}
		}
	}
	panic(fmt.Sprintf("difftest: put without a key: %q", args))
}

func (g *gen) ctlCompact() ctlOp {
	r := g.compactReq()
	rev := max(r.Revision, 0)
	c := ctlOp{kind: "compaction", args: []string{"compaction", strconv.FormatInt(rev, 10)}, compactRev: rev}
	if r.Physical {
		c.args = append(c.args, "--physical")
	}
	return c
}

// ctlOversized puts a value over --max-request-bytes, or over clientv3's
// 2 MiB send limit, through stdin (argv cannot hold either).
func (g *gen) ctlOversized() ctlOp {
	if g.p(0.6) {
		return ctlOp{kind: "put-too-large", args: []string{"put", string(g.key())},
			stdin: string(g.bigBytes(maxRequestBytes + sizeMarginBytes + g.r.IntN(4096)))}
	}
	return ctlOp{kind: "put-over-client-limit", args: []string{"put", string(g.key())},
		stdin: string(g.bigBytes(grpcRecvBytesMax + 1 + g.r.IntN(8192)))}
}
