package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// newestSnapshot is the index of the newest snapshot file in dir, 0 if none.
func newestSnapshot(t *testing.T, dir string) uint64 {
	t.Helper()
	names := snapFiles(t, dir)
	if len(names) == 0 {
		return 0
	}
	var index, term uint64
	if _, err := fmt.Sscanf(filepath.Base(names[len(names)-1]), "%016x-%016x.snap", &index, &term); err != nil {
		t.Fatal(err)
	}
	return index
}

func snapFiles(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, memberDirName, "snap", "*.snap"))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestMemberSnapshots: with --snapshot-count 50 a member writes snapshots
// as it applies, keeps --max-snapshots of them, and a restart loads the
// newest one plus the WAL after it.
func TestMemberSnapshots(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.SnapshotCount = 50
	cfg.MaxSnapshots = 2
	m := startMember(t, cfg)
	cli := newClient(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const keys = 330
	var lastRev int64
	for i := range keys {
		put, err := cli.Put(ctx, fmt.Sprintf("key%04d", i%100), fmt.Sprintf("value%d", i))
		if err != nil {
			t.Fatal(err)
		}
		lastRev = put.Header.Revision
	}
	// The snapshot writer runs in the background, and a job is due 50
	// entries after the last one saved: by 332 entries one at index 250 or
	// more has been handed out.
	deadline := time.Now().Add(10 * time.Second)
	for newestSnapshot(t, dir) < 250 {
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot at index 250 or more after %d puts: %v", keys, snapFiles(t, dir))
		}
		time.Sleep(10 * time.Millisecond)
	}
	m.Stop()
	// Releasing keeps the retained files plus the base and the one before
	// it; one more may have been committed while the member stopped.
	if names := snapFiles(t, dir); len(names) > 3 {
		t.Fatalf("snapshot files after %d puts with --max-snapshots 2: %v", keys, names)
	}
	newest := newestSnapshot(t, dir)

	core, logs := observer.New(zapcore.InfoLevel)
	m, err := Start(cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	recovered := logs.FilterMessage("recovered log").All()
	if len(recovered) != 1 || recovered[0].ContextMap()["snapshot"] != newest {
		t.Fatalf("restart did not start from the snapshot at index %d: %v", newest, recovered)
	}
	cli = newClient(t, m)
	get, err := cli.Get(ctx, "key", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if get.Header.Revision != lastRev || len(get.Kvs) != 100 {
		t.Fatalf("after restart: revision %d, %d keys; want %d, 100", get.Header.Revision, len(get.Kvs), lastRev)
	}
	for _, kv := range get.Kvs {
		var i int
		fmt.Sscanf(string(kv.Key), "key%d", &i)
		last := i + 100*((keys-1-i)/100)
		if want := fmt.Sprintf("value%d", last); string(kv.Value) != want {
			t.Fatalf("after restart %s=%s, want %s", kv.Key, kv.Value, want)
		}
	}
}

// TestMemberStopsOnSnapshotWriteError: a snapshot that cannot be written
// stops the member, with the reason, instead of being retried.
func TestMemberStopsOnSnapshotWriteError(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.SnapshotCount = 20
	m := startMember(t, cfg)
	defer m.Stop()
	cli := newClient(t, m)
	snapDir := filepath.Join(dir, memberDirName, "snap")
	if err := os.RemoveAll(snapDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(snapDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; ; i++ {
		if _, err := cli.Put(ctx, "k", "v"); err != nil {
			break
		}
		if i > 100 {
			t.Fatal("the member kept accepting writes after a snapshot could not be created")
		}
	}
	select {
	case <-m.Failed():
	case <-time.After(5 * time.Second):
		t.Fatal("the member did not stop")
	}
	if err := m.Err(); err == nil || !strings.Contains(err.Error(), "snapshot at index 20") {
		t.Fatalf("the member stopped with %v, want an error naming the snapshot", err)
	}
}
