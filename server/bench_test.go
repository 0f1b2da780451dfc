package server

import (
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// BenchmarkKV runs the workloads of scripts/bench-vs-etcd against a member
// in this process, on loopback gRPC with etcd's default timing and a data
// dir on disk, so that a profile of the server is one command away:
//
//	go test ./server -run '^$' -bench 'KV/put/200' -benchtime 50000x -cpuprofile cpu.out
//	go tool pprof -top -focus 'server\.|engine|raftlog|grpc\.\(\*Server\)' server.test cpu.out
//
// The client shares the process and the cores, as it shares the machine in
// scripts/bench-vs-etcd; its goroutines are grpc's client transport and
// benchWorker. Each sub-benchmark reports ops/s and the p50 and p99
// latencies of b.N requests.
func BenchmarkKV(b *testing.B) {
	cfg, err := ParseFlags([]string{
		"--data-dir", b.TempDir(),
		"--listen-client-urls", "http://127.0.0.1:0",
		"--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:0",
	}, nil, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	m, err := Start(cfg, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	defer m.Stop()
	endpoint := strings.TrimPrefix(m.ClientURL(), "http://")
	for _, w := range []struct {
		name           string
		op             func(ctx context.Context, kv pb.KVClient, key []byte) error
		clients, conns int
	}{
		{"put/1", benchPut, 1, 1},
		{"put/200", benchPut, 200, 10},
		{"txn-put/1", benchTxnPut, 1, 1},
		{"txn-put/200", benchTxnPut, 200, 10},
		{"range-l/100", benchRange(false), 100, 10},
		{"range-s/100", benchRange(true), 100, 10},
	} {
		b.Run(w.name, func(b *testing.B) {
			kvs := make([]pb.KVClient, w.conns)
			for i := range kvs {
				cc, err := grpc.NewClient("passthrough:///"+endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					b.Fatal(err)
				}
				defer cc.Close()
				kvs[i] = pb.NewKVClient(cc)
			}
			if _, err := kvs[0].Put(context.Background(), &pb.PutRequest{Key: benchKey(0), Value: benchValue}); err != nil {
				b.Fatal(err)
			}
			var next atomic.Int64
			lats := make([][]time.Duration, w.clients)
			var failed atomic.Pointer[error]
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for c := range w.clients {
				wg.Go(func() {
					kv := kvs[c%len(kvs)]
					rng := rand.New(rand.NewPCG(uint64(c), 1))
					for next.Add(1) <= int64(b.N) {
						t0 := time.Now()
						if err := w.op(context.Background(), kv, benchKey(rng.IntN(benchKeySpace))); err != nil {
							failed.CompareAndSwap(nil, &err)
							return
						}
						lats[c] = append(lats[c], time.Since(t0))
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if err := failed.Load(); err != nil {
				b.Fatal(*err)
			}
			var all []time.Duration
			for _, l := range lats {
				all = append(all, l...)
			}
			sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
			b.ReportMetric(float64(len(all))/elapsed.Seconds(), "ops/s")
			b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// The shape of the load, as etcd's op-guide benchmark: 8-byte keys drawn
// from benchKeySpace, 256-byte values.
const (
	benchKeyBytes   = 8
	benchValueBytes = 256
	benchKeySpace   = 100000
)

var benchValue = make([]byte, benchValueBytes)

func benchKey(i int) []byte {
	k := make([]byte, binary.MaxVarintLen64)
	binary.PutVarint(k, int64(i))
	return k[:benchKeyBytes]
}

func benchPut(ctx context.Context, kv pb.KVClient, key []byte) error {
	_, err := kv.Put(ctx, &pb.PutRequest{Key: key, Value: benchValue})
	return err
}

func benchTxnPut(ctx context.Context, kv pb.KVClient, key []byte) error {
	put := &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: key, Value: benchValue}}
	_, err := kv.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: put}}})
	return err
}

// benchRange reads key 0, which every sub-benchmark writes first.
func benchRange(serializable bool) func(context.Context, pb.KVClient, []byte) error {
	return func(ctx context.Context, kv pb.KVClient, _ []byte) error {
		_, err := kv.Range(ctx, &pb.RangeRequest{Key: benchKey(0), Serializable: serializable})
		return err
	}
}
