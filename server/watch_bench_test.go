package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"
)

// BenchmarkWatchFanout: one writer puts a key that every watcher watches; the watchers are
// spread over watchBenchStreams streams that read as fast as they can, and one more stream
// watches the key but never reads (the slow consumer). It reports the events delivered per
// second, the p99 delay from a put to its delivery (from the time stamp in the value, set just
// before the put is sent), and the heap per idle watcher.
//
// mode=burst writes as fast as the writer can (throughput; the delay is then mostly queueing);
// mode=paced waits until a put's events have reached every watcher before the next put (the
// delay is the fan-out time of one revision).
func BenchmarkWatchFanout(b *testing.B) {
	for _, n := range []int{0, 1000, 10000} {
		for _, paced := range []bool{false, true} {
			if n == 0 && paced {
				continue
			}
			mode := map[bool]string{false: "burst", true: "paced"}[paced]
			b.Run(fmt.Sprintf("watchers=%d/mode=%s", n, mode), func(b *testing.B) { benchFanout(b, n, paced) })
		}
	}
}

// watchBenchStreams is how many streams the fast watchers share; watchBenchValueBytes is the
// size of each put, large enough that the slow consumer's flow control window fills within a
// few hundred puts.
const (
	watchBenchStreams    = 16
	watchBenchValueBytes = 2048
)

func benchFanout(b *testing.B, watchers int, paced bool) {
	cfg, err := ParseFlags([]string{
		"--name", "m1", "--data-dir", b.TempDir(),
		"--listen-client-urls", "http://127.0.0.1:0", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--initial-cluster", "m1=http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--listen-peer-urls", "http://127.0.0.1:0",
		"--heartbeat-interval", "10", "--election-timeout", "100", "--unsafe-no-fsync",
	}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	m, err := Start(cfg, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	defer m.Stop()
	conn := grpcConn(b, m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The slow consumer: created, never read, on its own connection (so only its own flow
	// control window fills).
	slow, err := pb.NewWatchClient(grpcConn(b, m)).Watch(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := slow.Send(createReq("k")); err != nil {
		b.Fatal(err)
	}

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	streams := make([]pb.Watch_WatchClient, watchBenchStreams)
	for i := range streams {
		if streams[i], err = pb.NewWatchClient(conn).Watch(ctx); err != nil {
			b.Fatal(err)
		}
	}
	for i := range watchers {
		if err := streams[i%len(streams)].Send(createReq("k")); err != nil {
			b.Fatal(err)
		}
	}
	for i, s := range streams {
		for range (watchers - i + len(streams) - 1) / len(streams) {
			if r, err := s.Recv(); err != nil || !r.Created {
				b.Fatalf("create: %v %v", r, err)
			}
		}
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	perWatcher := float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / float64(max(watchers, 1))

	var (
		mu       sync.Mutex
		delays   []time.Duration
		received atomic.Int64
		wg       sync.WaitGroup
	)
	want := int64(watchers) * int64(b.N)
	done := make(chan struct{})
	step := make(chan struct{}, 1)
	for _, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			for {
				r, err := s.Recv()
				if err != nil {
					break
				}
				now := time.Now()
				for _, ev := range r.Events {
					local = append(local, now.Sub(time.Unix(0, int64(binary.BigEndian.Uint64(ev.Kv.Value)))))
				}
				got := received.Add(int64(len(r.Events)))
				if got == want {
					close(done)
				}
				if paced && got%int64(watchers) == 0 {
					select {
					case step <- struct{}{}:
					default:
					}
				}
			}
			mu.Lock()
			delays = append(delays, local...)
			mu.Unlock()
		}()
	}
	kv := pb.NewKVClient(conn)
	b.ResetTimer()
	start := time.Now()
	v := make([]byte, watchBenchValueBytes)
	if watchers == 0 {
		close(done)
	}
	for i := range b.N {
		binary.BigEndian.PutUint64(v, uint64(time.Now().UnixNano()))
		if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: v}); err != nil {
			b.Fatal(err)
		}
		for paced && received.Load() < int64(watchers)*int64(i+1) {
			select {
			case <-step:
			case <-time.After(time.Minute):
				b.Fatalf("put %d: delivered %d events", i, received.Load())
			}
		}
	}
	// The writes' own rate: with watchers=0 it is the baseline the fan-out must not slow down.
	putsElapsed := time.Since(start)
	// The bound allows a slow machine 20k deliveries per second.
	select {
	case <-done:
	case <-time.After(2*time.Minute + time.Duration(want/20000)*time.Second):
		b.Fatalf("delivered %d of %d events", received.Load(), want)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	m.watch.mu.Lock()
	behind := m.watch.core.Unsynced()
	m.watch.mu.Unlock()
	cancel()
	wg.Wait()
	slices.Sort(delays)
	b.ReportMetric(float64(b.N)/putsElapsed.Seconds(), "puts/s")
	if watchers == 0 {
		return
	}
	b.ReportMetric(float64(want)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(delays[len(delays)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(perWatcher, "B/watcher")
	// The slow consumer must be the only watcher left behind.
	b.ReportMetric(float64(behind), "unsynced")
}

func createReq(key string) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte(key)}}}
}
