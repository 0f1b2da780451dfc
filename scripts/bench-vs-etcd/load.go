package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Limits of the load generator.
const (
	// opTimeout bounds one request; a run whose requests time out is
	// reported with its error count, not hung.
	opTimeout = 10 * time.Second
	// rangeKeyIndex names the one key the range workloads read; it is
	// written before they start.
	rangeKeyIndex = 0
)

// ErrBadWorkload is returned for a workload name parseWorkload does not
// know.
var ErrBadWorkload = errors.New("bench-vs-etcd: bad workload")

// Operations a workload can send, as etcd's tools/benchmark names them.
const (
	opPut    = "put"     // Put of one random key
	opTxnPut = "txn-put" // Txn with no compare and one Put in Then
	opRangeL = "range-l" // linearizable Range of one existing key
	opRangeS = "range-s" // serializable Range of one existing key
)

// workload is one kind of load: an operation and how many clients send
// it over how many connections.
type workload struct {
	op      string
	clients int
	conns   int
}

func (w workload) String() string { return fmt.Sprintf("%s/%d", w.op, w.clients) }

// parseWorkload reads "op/clients"; conns are min(clients, conns).
func parseWorkload(s string, conns int) (workload, error) {
	op, n, ok := strings.Cut(s, "/")
	clients, err := strconv.Atoi(n)
	if !ok || err != nil || clients < 1 {
		return workload{}, fmt.Errorf("%w %q: want op/clients", ErrBadWorkload, s)
	}
	switch op {
	case opPut, opTxnPut, opRangeL, opRangeS:
	default:
		return workload{}, fmt.Errorf("%w %q: op is one of put, txn-put, range-l, range-s", ErrBadWorkload, s)
	}
	return workload{op: op, clients: clients, conns: min(clients, conns)}, nil
}

// loadConfig is what a run sends, where, and for how long.
type loadConfig struct {
	endpoint string // host:port of the gRPC client listener
	workload workload
	warmup   time.Duration // load before measuring starts
	duration time.Duration // measured window
	keyBytes int           // 8 in etcd's benchmark
	valBytes int           // 256 in etcd's op-guide runs
	keySpace int           // puts draw their key uniformly from [0, keySpace)
	// serverPID, if not 0, is the server process whose CPU time the run
	// reports.
	serverPID int
}

// result is what one measured window saw.
type result struct {
	lat     hist // latencies of the successful requests
	errs    uint64
	err     error // the first error, if errs > 0
	elapsed time.Duration
	// CPU time spent during the window, by this process and the server
	// (0 if its pid is unknown).
	clientCPU time.Duration
	serverCPU time.Duration
	// machineCPU is the CPU time all processes of the machine spent
	// during the window; what is beyond clientCPU + serverCPU is other
	// load, which makes the run noisy.
	machineCPU time.Duration
}

// otherCPU is the share of one core that processes other than the client
// and the server used during the window.
func (r *result) otherCPU() float64 {
	if r.serverCPU == 0 || r.machineCPU == 0 {
		return 0
	}
	return (r.machineCPU - r.clientCPU - r.serverCPU).Seconds() / r.elapsed.Seconds()
}

func (r *result) opsPerSec() float64 { return float64(r.lat.n) / r.elapsed.Seconds() }

func (r *result) String() string {
	s := fmt.Sprintf("%9.0f ops/s  p50 %8s  p99 %8s  cpu server %4.0f%% (%3.0fµs/op) client %4.0f%% other %4.0f%%  (%d ops",
		r.opsPerSec(), fmtDur(r.lat.quantile(0.50)), fmtDur(r.lat.quantile(0.99)),
		100*r.serverCPU.Seconds()/r.elapsed.Seconds(), 1e6*r.serverCPU.Seconds()/float64(max(r.lat.n, 1)),
		100*r.clientCPU.Seconds()/r.elapsed.Seconds(), 100*r.otherCPU(), r.lat.n)
	if r.errs > 0 {
		s += fmt.Sprintf(", %d errors, first: %v", r.errs, r.err)
	}
	return s + ")"
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", d.Seconds()*1e3)
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", d.Seconds()*1e3)
	default:
		return fmt.Sprintf("%.0fµs", d.Seconds()*1e6)
	}
}

// Phases of a run, read by every worker before and after each request.
const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

// runLoad drives cfg.endpoint with cfg.workload.clients closed-loop
// workers over cfg.workload.conns connections (worker i uses connection
// i mod conns), and measures the window after the warm-up. A request
// counts only if it started and ended inside the window.
func runLoad(cfg loadConfig) (*result, error) {
	w := cfg.workload
	conns := make([]*grpc.ClientConn, w.conns)
	for i := range conns {
		cc, err := grpc.NewClient("passthrough:///"+cfg.endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		conns[i] = cc
	}
	val := make([]byte, cfg.valBytes)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range val {
		val[i] = byte(rng.Uint32())
	}
	if w.op == opRangeL || w.op == opRangeS {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		_, err := pb.NewKVClient(conns[0]).Put(ctx, &pb.PutRequest{Key: benchKey(cfg.keyBytes, rangeKeyIndex), Value: val})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("writing the key to range: %w", err)
		}
	}

	var phase atomic.Int32
	workers := make([]*worker, w.clients)
	var wg sync.WaitGroup
	for i := range workers {
		wk := &worker{
			kv:   pb.NewKVClient(conns[i%len(conns)]),
			cfg:  &cfg,
			rng:  rand.New(rand.NewPCG(uint64(i), 0x9e3779b97f4a7c15)),
			val:  val,
			hist: new(hist),
		}
		workers[i] = wk
		wg.Go(func() { wk.run(&phase) })
	}
	time.Sleep(cfg.warmup)
	srv0 := processCPU(cfg.serverPID)
	cli0 := selfCPU()
	all0 := machineCPU()
	start := time.Now()
	phase.Store(phaseMeasure)
	time.Sleep(cfg.duration)
	phase.Store(phaseStop)
	res := &result{elapsed: time.Since(start)}
	res.clientCPU = selfCPU() - cli0
	res.serverCPU = processCPU(cfg.serverPID) - srv0
	res.machineCPU = machineCPU() - all0
	wg.Wait()
	for _, wk := range workers {
		res.lat.merge(wk.hist)
		res.errs += wk.errs
		if res.err == nil {
			res.err = wk.err
		}
	}
	return res, nil
}

// worker is one closed-loop client: it sends its next request when the
// previous one is answered.
type worker struct {
	kv   pb.KVClient
	cfg  *loadConfig
	rng  *rand.Rand
	val  []byte
	hist *hist
	errs uint64
	err  error
}

func (wk *worker) run(phase *atomic.Int32) {
	for {
		ph := phase.Load()
		if ph == phaseStop {
			return
		}
		start := time.Now()
		err := wk.do()
		took := time.Since(start)
		if ph != phaseMeasure || phase.Load() != phaseMeasure {
			continue
		}
		if err != nil {
			wk.errs++
			if wk.err == nil {
				wk.err = err
			}
			continue
		}
		wk.hist.add(took)
	}
}

func (wk *worker) do() error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var err error
	switch wk.cfg.workload.op {
	case opPut:
		_, err = wk.kv.Put(ctx, &pb.PutRequest{Key: wk.randomKey(), Value: wk.val})
	case opTxnPut:
		put := &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: wk.randomKey(), Value: wk.val}}
		_, err = wk.kv.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: put}}})
	case opRangeL, opRangeS:
		var resp *pb.RangeResponse
		resp, err = wk.kv.Range(ctx, &pb.RangeRequest{Key: benchKey(wk.cfg.keyBytes, rangeKeyIndex), Serializable: wk.cfg.workload.op == opRangeS})
		if err == nil && len(resp.Kvs) != 1 {
			err = fmt.Errorf("range of the bench key returned %d kvs, want 1", len(resp.Kvs))
		}
	default:
		panic("bench-vs-etcd: unknown op " + wk.cfg.workload.op)
	}
	return err
}

func (wk *worker) randomKey() []byte {
	return benchKey(wk.cfg.keyBytes, wk.rng.IntN(wk.cfg.keySpace))
}

// benchKey is key i as etcd's benchmark writes it: a varint in a
// zero-padded buffer of n bytes.
func benchKey(n, i int) []byte {
	k := make([]byte, max(n, binary.MaxVarintLen64))
	binary.PutVarint(k, int64(i))
	return k[:n]
}

// selfCPU is the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineCPU is the CPU time all processes have used since boot: the
// non-idle times of the first line of /proc/stat; 0 if unreadable.
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	// user nice system idle iowait irq softirq steal guest...: count the
	// time spent running this machine's processes; guest time is already
	// in user.
	var ticks int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 7 {
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicksPerSec
}

// clockTicksPerSec is USER_HZ, the unit of /proc/<pid>/stat times, which
// is 100 on every Linux architecture Go supports.
const clockTicksPerSec = 100

// processCPU is the CPU time process pid has used, from
// /proc/<pid>/stat; 0 if pid is 0 or unreadable.
func processCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, field 2, is in parentheses and may hold spaces;
	// utime and stime are fields 14 and 15, so 11 and 12 after it.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicksPerSec
}
