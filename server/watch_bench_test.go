package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// BenchmarkWatchFanout answers issue #7: do many watchers, one of them a slow consumer, slow
// the writes down? One writer puts keys one after the other as fast as it can; the watchers
// are spread over watchBenchStreams streams that read as fast as they can, and one more stream
// on its own connection, with a fixed 64 KiB flow control window, never reads (the slow
// consumer). Two shapes:
//
//   - broadcast: every watcher watches the one key written, so each put is an event for each
//     watcher (events/s = watchers × puts/s);
//   - sparse: each watcher watches its own key; the writer puts random keys, half of them
//     watched (an event for one watcher), half watched by nobody, as the keys of a Kubernetes
//     cluster are. The slow consumer watches every watched key.
//
// Each reports the writer's puts/s and p99 put latency (compare with watchers=0: the fan-out
// should cost the writes little), the events delivered per second and the p99 delay from a put
// to its delivery (the time stamp in the value, set just before the put is sent; in broadcast
// the writer outruns the fan-out, so the delay is mostly queueing), the heap per idle watcher,
// the events per response (above 1 when watchers fell behind and caught up several revisions
// at once) and how many watchers are behind at the end (only the slow consumer may be).
//
// The fast watchers decode only what the benchmark reads (the events' values), with
// protowire, so that the client's decoding in this process takes as little of the two cores
// as possible from the server being measured.
func BenchmarkWatchFanout(b *testing.B) {
	// The member binary runs with this tuning (Run); without it the fan-out's garbage made the
	// collector run so often that it, not the fan-out, halved the writes with 1k watchers.
	defer tuneGC()()
	for _, shape := range []string{"broadcast", "sparse"} {
		for _, n := range []int{0, 1000, 10000} {
			b.Run(fmt.Sprintf("shape=%s/watchers=%d", shape, n), func(b *testing.B) { benchFanout(b, shape, n) })
		}
	}
}

// watchBenchStreams is how many streams the fast watchers share; watchBenchValueBytes is the
// size of each put (a small Kubernetes object); watchBenchWindowBytes is the slow consumer's
// flow control window, which a few hundred events fill.
const (
	watchBenchStreams     = 16
	watchBenchValueBytes  = 256
	watchBenchWindowBytes = 1 << 16
)

func benchFanout(b *testing.B, shape string, watchers int) {
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

	// The keys: broadcast writes "k"; sparse writes watched keys "w/<i>" (watcher i's) and keys
	// nobody watches, "u/<i>", in a random order fixed before the clock starts.
	sparse := shape == "sparse"
	keys := make([][]byte, b.N)
	wantEvents := int64(0)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range keys {
		switch {
		case !sparse:
			keys[i] = []byte("k")
			wantEvents += int64(watchers)
		case watchers > 0 && rng.IntN(2) == 0:
			keys[i] = fmt.Appendf(nil, "w/%05d", rng.IntN(watchers))
			wantEvents++
		default:
			keys[i] = fmt.Appendf(nil, "u/%05d", rng.IntN(max(watchers, 1000)))
		}
	}
	create := func(i int) *pb.WatchRequest {
		if sparse {
			return createReq(fmt.Sprintf("w/%05d", i))
		}
		return createReq("k")
	}

	if watchers > 0 {
		slowConn, err := grpc.NewClient(conn.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(watchBenchWindowBytes), grpc.WithInitialConnWindowSize(watchBenchWindowBytes))
		if err != nil {
			b.Fatal(err)
		}
		defer slowConn.Close()
		slow, err := pb.NewWatchClient(slowConn).Watch(ctx)
		if err != nil {
			b.Fatal(err)
		}
		req := createReq("k")
		if sparse {
			req = &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
				Key: []byte("w/"), RangeEnd: []byte("w0")}}}
		}
		if err := slow.Send(req); err != nil {
			b.Fatal(err)
		}
	}

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	streams := make([]grpc.ClientStream, watchBenchStreams)
	desc := &pb.Watch_ServiceDesc.Streams[0]
	for i := range streams {
		if streams[i], err = conn.NewStream(ctx, desc, "/etcdserverpb.Watch/Watch", grpc.ForceCodecV2(rawWatchCodec{})); err != nil {
			b.Fatal(err)
		}
	}
	for i := range watchers {
		if err := streams[i%len(streams)].SendMsg(create(i)); err != nil {
			b.Fatal(err)
		}
	}
	for i, s := range streams {
		for range (watchers - i + len(streams) - 1) / len(streams) {
			var r rawWatchResponse
			if err := s.RecvMsg(&r); err != nil || !r.created() {
				b.Fatalf("create: %v", err)
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
		messages atomic.Int64
		wg       sync.WaitGroup
	)
	done := make(chan struct{})
	if wantEvents == 0 {
		close(done)
	}
	for _, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			for {
				var r rawWatchResponse
				if err := s.RecvMsg(&r); err != nil {
					break
				}
				now := time.Now()
				n := r.events(func(value []byte) {
					local = append(local, now.Sub(time.Unix(0, int64(binary.BigEndian.Uint64(value)))))
				})
				messages.Add(1)
				if received.Add(int64(n)) == wantEvents && n > 0 {
					close(done)
				}
			}
			mu.Lock()
			delays = append(delays, local...)
			mu.Unlock()
		}()
	}
	// The writer is another client, on its own connection: on the watchers' connection its
	// answers would wait behind their events in grpc's per-connection send queue and flow
	// control window, which measures the watchers' client, not the server.
	kv := pb.NewKVClient(grpcConn(b, m))
	putLatencies := make([]time.Duration, b.N)
	v := make([]byte, watchBenchValueBytes)
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		t := time.Now()
		binary.BigEndian.PutUint64(v, uint64(t.UnixNano()))
		if _, err := kv.Put(ctx, &pb.PutRequest{Key: keys[i], Value: v}); err != nil {
			b.Fatal(err)
		}
		putLatencies[i] = time.Since(t)
	}
	putsElapsed := time.Since(start)
	// The bound allows a slow machine 20k deliveries per second.
	select {
	case <-done:
	case <-time.After(2*time.Minute + time.Duration(wantEvents/20000)*time.Second):
		b.Fatalf("delivered %d of %d events", received.Load(), wantEvents)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	m.watch.mu.Lock()
	behind := m.watch.core.Unsynced()
	m.watch.mu.Unlock()
	cancel()
	wg.Wait()
	slices.Sort(putLatencies)
	b.ReportMetric(float64(b.N)/putsElapsed.Seconds(), "puts/s")
	b.ReportMetric(float64(putLatencies[len(putLatencies)*99/100].Microseconds())/1000, "put-p99-ms")
	if watchers == 0 {
		return
	}
	slices.Sort(delays)
	b.ReportMetric(float64(wantEvents)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(delays[len(delays)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(perWatcher, "B/watcher")
	// Above 1 when watchers fell behind and caught up several revisions per response.
	b.ReportMetric(float64(received.Load())/float64(messages.Load()), "events/response")
	// The slow consumer must be the only watcher left behind.
	b.ReportMetric(float64(behind), "unsynced")
}

func createReq(key string) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte(key)}}}
}

// rawWatchCodec is the fast watchers' client codec: requests are marshalled as usual,
// responses are kept as bytes (rawWatchResponse).
type rawWatchCodec struct{}

// rawWatchResponse is a WatchResponse's wire bytes.
type rawWatchResponse struct{ b []byte }

func (rawWatchCodec) Marshal(v any) (mem.BufferSlice, error) {
	return encoding.GetCodecV2(grpcproto.Name).Marshal(v)
}

func (rawWatchCodec) Unmarshal(data mem.BufferSlice, v any) error {
	v.(*rawWatchResponse).b = data.Materialize()
	return nil
}

func (rawWatchCodec) Name() string { return grpcproto.Name }

// created reports whether field created (3) is set.
func (r *rawWatchResponse) created() bool {
	created := false
	rawFields(r.b, func(num protowire.Number, v uint64, _ []byte) {
		if num == 3 {
			created = v != 0
		}
	})
	return created
}

// events calls f with the value of each event's key-value (events 11, kv 2, value 5) and
// returns how many events there were.
func (r *rawWatchResponse) events(f func(value []byte)) int {
	n := 0
	rawFields(r.b, func(num protowire.Number, _ uint64, ev []byte) {
		if num != 11 {
			return
		}
		n++
		rawFields(ev, func(num protowire.Number, _ uint64, kv []byte) {
			if num == 2 {
				rawFields(kv, func(num protowire.Number, _ uint64, value []byte) {
					if num == 5 {
						f(value)
					}
				})
			}
		})
	})
	return n
}

// rawFields calls f for each varint (v) and length-delimited (b) field of message m.
func rawFields(m []byte, f func(num protowire.Number, v uint64, b []byte)) {
	for len(m) > 0 {
		num, typ, n := protowire.ConsumeTag(m)
		if n < 0 {
			panic(protowire.ParseError(n))
		}
		m = m[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(m)
			if n < 0 {
				panic(protowire.ParseError(n))
			}
			f(num, v, nil)
			m = m[n:]
		case protowire.BytesType:
			b, n := protowire.ConsumeBytes(m)
			if n < 0 {
				panic(protowire.ParseError(n))
			}
			f(num, 0, b)
			m = m[n:]
		default:
			panic(fmt.Sprintf("field %d has wire type %d", num, typ))
		}
	}
}
