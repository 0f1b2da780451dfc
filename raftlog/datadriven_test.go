package raftlog

import (
	"fmt"
	"io"
	"math/rand/v2"
	"path"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/cockroachdb/datadriven"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/basaltdb/basalt/diskio"
)

// TestDataDriven runs testdata/raftlog/*.txt on the simulated disk. Run
// with -rewrite to regenerate the expected output, and keep the change
// only if you understand what caused it.
func TestDataDriven(t *testing.T) {
	datadriven.Walk(t, "../testdata/raftlog", func(t *testing.T, path string) {
		e := newEnv()
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			return e.handle(t, d)
		})
	})
}

const envDir = "n1"

// env is the state of one golden file: a Sim, the Log open on it (if
// any) and the recovery log lines not yet printed.
type env struct {
	disk *diskio.Sim
	log  *Log
	opts Options
	logs *observer.ObservedLogs
	// snaps holds the body written for each snapshot index.
	snaps map[uint64]string
}

func newEnv() *env {
	core, logs := observer.New(zapcore.InfoLevel)
	return &env{
		disk:  diskio.NewSim(),
		opts:  Options{SegmentBytes: segmentBytesMin, Logger: zap.New(core)},
		logs:  logs,
		snaps: make(map[uint64]string),
	}
}

func (e *env) handle(t *testing.T, d *datadriven.TestData) string {
	var out string
	switch d.Cmd {
	case "reset":
		*e = *newEnv()
		out = "ok\n"
	case "open":
		out = e.cmdOpen(t, d)
	case "save":
		out = e.cmdSave(t, d)
	case "close":
		out = e.cmdClose()
	case "crash":
		out = e.cmdCrash(t, d)
	case "show":
		out = e.cmdShow()
	case "entries":
		out = e.cmdEntries(t, d)
	case "term":
		out = e.cmdTerm(t, d)
	case "ls":
		out = e.cmdLs(t)
	case "snapshot":
		out = e.cmdSnapshot(t, d)
	case "snapshot-saved":
		out = e.cmdSnapshotSaved(t, d)
	case "apply-snapshot", "receive-snapshot":
		out = e.cmdApplySnapshot(t, d)
	case "read-snapshot":
		out = e.cmdReadSnapshot()
	case "damage":
		out = e.cmdDamage(t, d)
	case "fail":
		out = e.cmdFail(t, d)
	case "recovery-table":
		out = cmdRecoveryTable()
	default:
		t.Fatalf("%s: unknown command %q", d.Pos, d.Cmd)
	}
	return e.takeLogs() + out
}

// takeLogs prints the log lines (recovery decisions) since the last call.
func (e *env) takeLogs() string {
	var b strings.Builder
	for _, le := range e.logs.TakeAll() {
		fmt.Fprintf(&b, "%s: %s", le.Level, le.Message)
		for _, f := range le.Context {
			enc := zapcore.NewMapObjectEncoder()
			f.AddTo(enc)
			fmt.Fprintf(&b, " %s=%v", f.Key, enc.Fields[f.Key])
		}
		b.WriteString("\n")
	}
	return b.String()
}

func errString(err error) string { return "error: " + err.Error() + "\n" }

// Example: open [segment-bytes=1024] [retain=2] [cache-bytes=0]
func (e *env) cmdOpen(t *testing.T, d *datadriven.TestData) string {
	if e.log != nil {
		t.Fatalf("%s: open while a Log is open", d.Pos)
	}
	d.MaybeScanArgs(t, "segment-bytes", &e.opts.SegmentBytes)
	d.MaybeScanArgs(t, "retain", &e.opts.SnapshotsRetained)
	d.MaybeScanArgs(t, "cache-bytes", &e.opts.EntryCacheBytes)
	l, err := Open(e.disk, envDir, e.opts)
	if err != nil {
		return errString(err)
	}
	e.log = l
	return describeLog(l)
}

// Example: save [term=2 vote=1 commit=5] [entries=3-7 eterm=2 size=10] [nosync]
func (e *env) cmdSave(t *testing.T, d *datadriven.TestData) string {
	var hs *raftpb.HardState
	if d.HasArg("term") {
		var term, vote, commit uint64
		d.ScanArgs(t, "term", &term)
		d.MaybeScanArgs(t, "vote", &vote)
		d.MaybeScanArgs(t, "commit", &commit)
		hs = hardStateP(term, vote, commit)
	}
	var es []*raftpb.Entry
	if d.HasArg("entries") {
		var r string
		var eterm uint64
		size := 8
		d.ScanArgs(t, "entries", &r)
		d.ScanArgs(t, "eterm", &eterm)
		d.MaybeScanArgs(t, "size", &size)
		lo, hi := parseRange(t, r)
		es = ents(lo, hi+1, eterm, size)
	}
	if err := e.log.Save(hs, es, !d.HasArg("nosync")); err != nil {
		return errString(err)
	}
	return "ok\n"
}

func parseRange(t *testing.T, r string) (uint64, uint64) {
	a, b, _ := strings.Cut(r, "-")
	lo, err1 := strconv.ParseUint(a, 10, 64)
	hi, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("bad range %q", r)
	}
	return lo, hi
}

// Example: close
func (e *env) cmdClose() string {
	err := e.log.Close()
	e.log = nil
	if err != nil {
		return errString(err)
	}
	return "ok\n"
}

// Example: crash [keep=all|none|seed=N]
// The Log (if open) is abandoned; the disk becomes one post-crash state.
func (e *env) cmdCrash(t *testing.T, d *datadriven.TestData) string {
	mode := "none"
	d.MaybeScanArgs(t, "keep", &mode)
	switch mode {
	case "none":
		e.disk = e.disk.CrashWith(nil, diskio.CrashDropAll)
	case "all":
		e.disk = e.disk.CrashWith(nil, diskio.CrashKeepAll)
	default:
		seed, err := strconv.ParseUint(mode, 10, 64)
		if err != nil {
			t.Fatalf("%s: keep=%s", d.Pos, mode)
		}
		e.disk = e.disk.Crash(rand.New(rand.NewPCG(seed, seed)))
	}
	e.log = nil
	return "ok\n"
}

// Example: show
func (e *env) cmdShow() string {
	if e.log == nil {
		return "no log open\n"
	}
	return describeLog(e.log)
}

// Example: entries lo=3 hi=7 [max-size=100]
func (e *env) cmdEntries(t *testing.T, d *datadriven.TestData) string {
	var lo, hi uint64
	maxSize := ^uint64(0)
	d.ScanArgs(t, "lo", &lo)
	d.ScanArgs(t, "hi", &hi)
	d.MaybeScanArgs(t, "max-size", &maxSize)
	es, err := e.log.Entries(lo, hi, maxSize)
	if err != nil {
		return errString(err)
	}
	var b strings.Builder
	for _, en := range es {
		fmt.Fprintf(&b, "%d/%d %q\n", en.GetIndex(), en.GetTerm(), en.GetData())
	}
	return b.String()
}

// Example: term i=5
func (e *env) cmdTerm(t *testing.T, d *datadriven.TestData) string {
	var i uint64
	d.ScanArgs(t, "i", &i)
	term, err := e.log.Term(i)
	if err != nil {
		return errString(err)
	}
	return fmt.Sprintf("%d\n", term)
}

// Example: ls
// Lists the log's files with their sizes and durability, as the Sim holds
// them.
func (e *env) cmdLs(t *testing.T) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(e.disk.Describe()), "\n") {
		if strings.Contains(line, "/LOCK") || strings.HasSuffix(strings.Fields(line)[0], "/") {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		var kept []string
		for f := range strings.FieldsSeq(rest) {
			if strings.HasPrefix(f, "size=") || strings.HasPrefix(f, "synced=") || strings.HasPrefix(f, "(") || strings.HasSuffix(f, ")") {
				kept = append(kept, f)
			}
		}
		fmt.Fprintf(&b, "%s\n", strings.TrimSpace(name+" "+strings.Join(kept, " ")))
	}
	return b.String()
}

// Example: snapshot index=5 [voters=1,2,3] [abort] [no-commit]
// Writes a snapshot whose body is "state@<index>" through CreateSnapshot.
func (e *env) cmdSnapshot(t *testing.T, d *datadriven.TestData) string {
	var index uint64
	d.ScanArgs(t, "index", &index)
	term, err := e.log.Term(index)
	if err != nil {
		return errString(err)
	}
	if d.HasArg("term") {
		d.ScanArgs(t, "term", &term)
	}
	meta := e.meta(t, d, index, term)
	w, err := e.log.CreateSnapshot(meta)
	if err != nil {
		return errString(err)
	}
	body := fmt.Sprintf("state@%d", index)
	if _, err := io.WriteString(w, body); err != nil {
		return errString(err)
	}
	switch {
	case d.HasArg("abort"):
		err = w.Abort()
	case d.HasArg("no-commit"):
		return "left uncommitted\n"
	default:
		err = w.Commit()
	}
	if err != nil {
		return errString(err)
	}
	e.snaps[index] = body
	return "ok\n"
}

func (e *env) meta(t *testing.T, d *datadriven.TestData, index, term uint64) *raftpb.SnapshotMetadata {
	var voters []uint64
	if d.HasArg("voters") {
		var s string
		d.ScanArgs(t, "voters", &s)
		for v := range strings.SplitSeq(s, ",") {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatalf("%s: voters=%s", d.Pos, s)
			}
			voters = append(voters, n)
		}
	}
	return &raftpb.SnapshotMetadata{Index: new(index), Term: new(term), ConfState: &raftpb.ConfState{Voters: voters}}
}

// Example: snapshot-saved index=5 [term=2]
func (e *env) cmdSnapshotSaved(t *testing.T, d *datadriven.TestData) string {
	var index uint64
	d.ScanArgs(t, "index", &index)
	term, _ := e.log.Term(index)
	d.MaybeScanArgs(t, "term", &term)
	if err := e.log.SnapshotSaved(e.meta(t, d, index, term)); err != nil {
		return errString(err)
	}
	return describeLog(e.log)
}

// Example: apply-snapshot index=20 term=3 [voters=1,2,3]
// Writes the snapshot's body (as a follower receiving it would), then
// ApplySnapshot; receive-snapshot stops before ApplySnapshot.
func (e *env) cmdApplySnapshot(t *testing.T, d *datadriven.TestData) string {
	var index, term uint64
	d.ScanArgs(t, "index", &index)
	d.ScanArgs(t, "term", &term)
	meta := e.meta(t, d, index, term)
	w, err := e.log.CreateSnapshot(meta)
	if err != nil {
		return errString(err)
	}
	body := fmt.Sprintf("leader-state@%d", index)
	if _, err := io.WriteString(w, body); err != nil {
		return errString(err)
	}
	if err := w.Commit(); err != nil {
		return errString(err)
	}
	e.snaps[index] = body
	if d.Cmd == "receive-snapshot" {
		return "ok\n"
	}
	if err := e.log.ApplySnapshot(meta); err != nil {
		return errString(err)
	}
	return describeLog(e.log)
}

// Example: read-snapshot
func (e *env) cmdReadSnapshot() string {
	meta, body, err := e.log.OpenSnapshot()
	if err != nil {
		return errString(err)
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err != nil {
		return fmt.Sprintf("%d/%d read %q then %s", meta.GetIndex(), meta.GetTerm(), b, errString(err))
	}
	return fmt.Sprintf("%d/%d %q\n", meta.GetIndex(), meta.GetTerm(), b)
}

// Example: damage file=*.wal at=96 flip=3 | zero=16 | garbage=16 | cut
// Changes a file of the log durably, as rot, a lost write or a stray write
// would: flip bit N of the byte at `at`, zero or fill with 0xa5 the bytes
// [at, at+n), or cut the file at `at`. The file is the last of the log's
// files whose name matches the pattern.
func (e *env) cmdDamage(t *testing.T, d *datadriven.TestData) string {
	var pattern string
	var at int64
	d.ScanArgs(t, "file", &pattern)
	d.ScanArgs(t, "at", &at)
	name := e.findFile(t, pattern)
	f, err := e.disk.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n int
	switch {
	case d.HasArg("flip"):
		var bit uint
		d.ScanArgs(t, "flip", &bit)
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, at); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 1 << bit
		_, err = f.WriteAt(b, at)
	case d.HasArg("zero"):
		d.ScanArgs(t, "zero", &n)
		_, err = f.WriteAt(make([]byte, n), at)
	case d.HasArg("garbage"):
		d.ScanArgs(t, "garbage", &n)
		_, err = f.WriteAt([]byte(strings.Repeat("\xa5", n)), at)
	case d.HasArg("cut"):
		err = f.Truncate(at)
	default:
		t.Fatalf("%s: damage what?", d.Pos)
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("damaged %s\n", strings.TrimPrefix(name, envDir+"/"))
}

func (e *env) findFile(t *testing.T, pattern string) string {
	var found string
	for _, dir := range []string{envDir + "/wal", envDir + "/snap"} {
		names, err := e.disk.List(dir)
		if err != nil {
			continue
		}
		for _, n := range names {
			if ok, _ := path.Match(pattern, n); ok {
				found = dir + "/" + n
			}
		}
	}
	if found == "" {
		t.Fatalf("no file matches %q", pattern)
	}
	return found
}

// Example: recovery-table
// Prints recoveryCases, one row per combination of its inputs.
func cmdRecoveryTable() string {
	var b strings.Builder
	yn := func(v bool) string {
		if v {
			return "yes"
		}
		return "no"
	}
	fmt.Fprintf(&b, "%-7s %-5s %-8s %-6s %-10s %s\n", "newest", "zero", "vouched", "after", "decision", "why")
	for i := range recoveryCases {
		d := damage{newest: i&8 != 0, zero: i&4 != 0, vouched: i&2 != 0, bytesAfter: i&1 != 0}
		if d.index() != i {
			panic(fmt.Sprintf("damage.index of %+v is %d, want %d", d, d.index(), i))
		}
		c := recoveryCases[i]
		fmt.Fprintf(&b, "%-7s %-5s %-8s %-6s %-10s %s\n", yn(d.newest), yn(d.zero), yn(d.vouched), yn(d.bytesAfter), c.d, c.why)
	}
	return b.String()
}

// Example: fail op=sync [path=*.wal] [index=0]
// Makes the index-th (0-based) later op of that kind on matching paths
// fail with EIO.
func (e *env) cmdFail(t *testing.T, d *datadriven.TestData) string {
	var op, pattern string
	var index int64
	d.ScanArgs(t, "op", &op)
	pattern = "*"
	d.MaybeScanArgs(t, "path", &pattern)
	d.MaybeScanArgs(t, "index", &index)
	kinds := map[string]diskio.OpKind{"sync": diskio.OpSync, "write": diskio.OpWrite, "syncdir": diskio.OpSyncDir, "rename": diskio.OpRename}
	k, ok := kinds[op]
	if !ok {
		t.Fatalf("%s: op=%s", d.Pos, op)
	}
	e.disk.SetInjector(diskio.If(diskio.And(diskio.Kinds(k), diskio.PathMatch(pattern)), diskio.OnIndex(index, diskio.Fail(syscall.EIO))))
	return "ok\n"
}
