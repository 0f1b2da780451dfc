package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// testConfig is a one-member configuration in dir on free loopback ports.
func testConfig(t *testing.T, dir string) *Config {
	t.Helper()
	cfg, err := ParseFlags([]string{
		"--name", "m1",
		"--data-dir", dir,
		"--listen-client-urls", "http://127.0.0.1:0",
		"--advertise-client-urls", "http://127.0.0.1:2379",
		"--initial-cluster", "m1=http://127.0.0.1:2380",
		"--initial-advertise-peer-urls", "http://127.0.0.1:2380", "--listen-peer-urls", "http://127.0.0.1:0",
		"--heartbeat-interval", "10", "--election-timeout", "100",
	}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func startMember(t *testing.T, cfg *Config) *Member {
	t.Helper()
	m, err := Start(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newClient(t *testing.T, m *Member) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL()}, DialTimeout: 5 * time.Second, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestMemberKeepsDataAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	m := startMember(t, cfg)
	cli := newClient(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	put, err := cli.Put(ctx, "foo", "bar")
	if err != nil {
		t.Fatal(err)
	}
	if put.Header.Revision != 2 {
		t.Fatalf("first put got revision %d, want 2 (a new store is at revision 1)", put.Header.Revision)
	}
	if _, err := cli.Put(ctx, "foo", "baz"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, "nothing"); err != nil {
		t.Fatal(err)
	}
	m.Stop()

	m = startMember(t, cfg)
	defer m.Stop()
	cli = newClient(t, m)
	get, err := cli.Get(ctx, "foo")
	if err != nil {
		t.Fatal(err)
	}
	if len(get.Kvs) != 1 || string(get.Kvs[0].Value) != "baz" {
		t.Fatalf("after restart got %v, want foo=baz", get.Kvs)
	}
	kv := get.Kvs[0]
	if get.Header.Revision != 3 || kv.CreateRevision != 2 || kv.ModRevision != 3 || kv.Version != 2 {
		t.Fatalf("after restart got header revision %d and kv %v; want revision 3, create 2, mod 3, version 2", get.Header.Revision, kv)
	}
	if get.Header.ClusterId == 0 || get.Header.MemberId == 0 || get.Header.RaftTerm == 0 {
		t.Fatalf("header lacks member fields: %v", get.Header)
	}
}

func TestMemberHTTP(t *testing.T) {
	m := startMember(t, testConfig(t, t.TempDir()))
	defer m.Stop()
	for _, c := range []struct{ method, path, body, want string }{
		{"GET", "/health", "", `{"health":"true","reason":""}`},
		{"GET", "/version", "", `{"etcdserver":"3.7.3","etcdcluster":"3.7.0","storage":"3.7.0"}`},
		{"GET", "/livez", "", "ok\n"},
		{"POST", "/v3/kv/put", `{"key":"Zm9v","value":"YmFy"}`, `"revision":"2"`},
		{"POST", "/v3/kv/range", `{"key":"Zm9v"}`, `"value":"YmFy"`},
		{"POST", "/v3/kv/put", `{"value":"YmFy"}`, `"message":"etcdserver: key is not provided"`},
	} {
		req, err := http.NewRequest(c.method, m.ClientURL()+c.path, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(strings.ReplaceAll(string(body), " ", ""), strings.ReplaceAll(c.want, " ", "")) {
			t.Errorf("%s %s: got %d %s, want it to contain %s", c.method, c.path, resp.StatusCode, body, c.want)
		}
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "*" {
			t.Errorf("%s %s: Access-Control-Allow-Origin %q, want * as etcd's default --cors", c.method, c.path, got)
		}
	}
}

// TestMemberPprof checks that --enable-pprof serves Go's profiles on the
// client URL, as etcd's does, and that they stay off by default.
func TestMemberPprof(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		cfg := testConfig(t, t.TempDir())
		cfg.EnablePprof = enabled
		m := startMember(t, cfg)
		resp, err := http.Get(m.ClientURL() + "/debug/pprof/goroutine?debug=1")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m.Stop()
		served := resp.StatusCode == http.StatusOK && strings.Contains(string(body), "goroutine profile:")
		if served != enabled {
			t.Errorf("--enable-pprof=%v: GET /debug/pprof/goroutine answered %d", enabled, resp.StatusCode)
		}
	}
}

func TestRangeStreamMatchesRange(t *testing.T) {
	m := startMember(t, testConfig(t, t.TempDir()))
	defer m.Stop()
	cli := newClient(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	value := strings.Repeat("v", 300)
	for i := range 500 {
		if _, err := cli.Put(ctx, fmt.Sprintf("key%04d", i), value); err != nil {
			t.Fatal(err)
		}
	}
	kv := pb.NewKVClient(cli.ActiveConnection())
	for _, req := range []*pb.RangeRequest{
		{Key: []byte("key"), RangeEnd: []byte("kez")},
		{Key: []byte("key"), RangeEnd: []byte("kez"), Limit: 137},
		{Key: []byte("key0100"), RangeEnd: []byte("key0200"), KeysOnly: true},
		{Key: []byte("key"), RangeEnd: []byte("kez"), CountOnly: true},
		{Key: []byte("key"), RangeEnd: []byte("kez"), Revision: 50, Serializable: true},
	} {
		want, err := kv.Range(ctx, proto.Clone(req).(*pb.RangeRequest))
		if err != nil {
			t.Fatal(err)
		}
		stream, err := kv.RangeStream(ctx, proto.Clone(req).(*pb.RangeRequest))
		if err != nil {
			t.Fatal(err)
		}
		got := &pb.RangeResponse{}
		chunks := 0
		for {
			chunk, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			chunks++
			r := chunk.RangeResponse
			if r.Header != nil {
				if got.Header != nil {
					t.Fatalf("%v: two chunks carry a header", req)
				}
				got.Header, got.More, got.Count = r.Header, r.More, r.Count
			}
			got.Kvs = append(got.Kvs, r.Kvs...)
		}
		if !proto.Equal(got, want) {
			t.Errorf("%v: %d chunks merged to\n%v\nwant\n%v", req, chunks, got, want)
		}
		if len(want.Kvs) > 2*rangeStreamChunkInitial && chunks < 2 {
			t.Errorf("%v: %d kvs came in %d chunk(s); want them streamed", req, len(want.Kvs), chunks)
		}
	}
	stream, err := kv.RangeStream(ctx, &pb.RangeRequest{Key: []byte("a"), SortOrder: pb.RangeRequest_DESCEND})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "RangeStream does not support custom sort orders") {
		t.Errorf("sorted RangeStream: got %v", err)
	}
}

func TestMaintenanceHashesAndDefragment(t *testing.T) {
	m := startMember(t, testConfig(t, t.TempDir()))
	defer m.Stop()
	cli := newClient(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, v := range []string{"1", "2", "3"} {
		if _, err := cli.Put(ctx, "k", v); err != nil {
			t.Fatal(err)
		}
	}
	at3, err := cli.HashKV(ctx, m.ClientURL(), 3)
	if err != nil {
		t.Fatal(err)
	}
	latest, err := cli.HashKV(ctx, m.ClientURL(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if at3.HashRevision != 3 || latest.HashRevision != 4 || latest.Header.Revision != 4 || at3.Hash == latest.Hash {
		t.Fatalf("HashKV at 3 = %v, latest = %v; want hash revisions 3 and 4 with different hashes", at3, latest)
	}
	if _, err := cli.Compact(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Defragment(ctx, m.ClientURL()); err != nil {
		t.Fatal(err)
	}
	again, err := cli.HashKV(ctx, m.ClientURL(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if again.Hash == latest.Hash || again.CompactRevision != 3 {
		t.Fatalf("after compacting at 3 HashKV = %v; want compact revision 3 and a new hash (history below 3 is gone)", again)
	}
	if _, err := cli.HashKV(ctx, m.ClientURL(), 2); !errors.Is(err, rpctypes.ErrCompacted) {
		t.Fatalf("HashKV below the compaction: got %v, want %v", err, rpctypes.ErrCompacted)
	}
	if _, err := cli.HashKV(ctx, m.ClientURL(), 99); !errors.Is(err, rpctypes.ErrFutureRev) {
		t.Fatalf("HashKV in the future: got %v, want %v", err, rpctypes.ErrFutureRev)
	}
	if at3.CompactRevision != -1 {
		t.Fatalf("HashKV before any compaction = %v; want etcd's compact revision -1", at3)
	}
	// As etcd's, the hash at a compaction revision is the one taken when
	// compacting there, also once a later compaction made it unreadable.
	for range 2 {
		again3, err := cli.HashKV(ctx, m.ClientURL(), 3)
		if err != nil {
			t.Fatal(err)
		}
		if again3.Hash != at3.Hash || again3.CompactRevision != -1 || again3.HashRevision != 3 {
			t.Fatalf("HashKV at the compaction revision 3 = %v; want the hash before compacting, %v", again3, at3)
		}
		if _, err := cli.Compact(ctx, 4); err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
			t.Fatal(err)
		}
	}
}
