package server

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/version"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/basaltdb/basalt/diskio"
	"github.com/basaltdb/basalt/engine"
	"github.com/basaltdb/basalt/raftlog"
)

// A member's files, under its data dir.
const (
	memberDirName = "member"
	lockFileName  = "lock"
	// idFileName holds the member and cluster IDs chosen at bootstrap; they
	// are kept as etcd keeps them in its WAL metadata, so a restart with
	// other --initial-* flags stays the same member.
	idFileName = "id"
)

// Limits of a member's start and stop.
const (
	// readyTimeout bounds the wait for a leader and the replay of the log
	// before the member gives up starting.
	readyTimeout = 60 * time.Second
	// requestTimeoutBase is etcd's base request timeout, to which it adds
	// two election timeouts.
	requestTimeoutBase = 5 * time.Second
	// stopGracePeriod bounds how long in-flight RPCs may take to finish
	// when the member stops.
	stopGracePeriod = 5 * time.Second
	// grpcOverheadBytes is what etcd allows a gRPC message beyond
	// --max-request-bytes.
	grpcOverheadBytes = 512 * 1024
	// quotaBytesDefault is the quota when --quota-backend-bytes is 0.
	quotaBytesDefault = 2 << 30
	// snapshotPacedBytes is the store size from which snapshots are paced
	// by the bytes the log took since the last one, not only by
	// --snapshot-count (engine.Config.SnapshotPacedBytes): a snapshot
	// rewrites the whole store, which etcd's does not (its store is the
	// backend file), and the log a restart replays stays within about the
	// store's size.
	snapshotPacedBytes = 8 << 20
	// grpcStreamWorkers are goroutines kept to serve RPCs: a fresh
	// goroutine per RPC grows its stack while it decodes the request, which
	// cost about a tenth of the server's CPU under put/200. A request
	// beyond them gets a goroutine of its own, as without workers.
	grpcStreamWorkers = 256
)

// Member is one running basalt member: its engine loop and its client
// listeners.
type Member struct {
	cfg       *Config
	lg        *zap.Logger
	memberID  uint64
	clusterID uint64

	lock io.Closer
	log  *raftlog.Log
	loop *loop

	health    *health.Server
	grpc      *grpc.Server
	gwConn    *grpc.ClientConn
	https     []*http.Server
	listeners []*splitListener
}

// Start opens (or bootstraps) the member in cfg.DataDir, waits until it
// can serve, and starts serving clients.
func Start(cfg *Config, lg *zap.Logger) (*Member, error) {
	m := &Member{cfg: cfg, lg: lg}
	if err := m.open(); err != nil {
		m.closeStorage()
		return nil, err
	}
	go m.loop.run()
	if err := m.waitReady(); err != nil {
		m.loop.Stop()
		m.closeStorage()
		return nil, err
	}
	if err := m.serve(); err != nil {
		m.Stop()
		return nil, err
	}
	return m, nil
}

func (m *Member) open() error {
	dir := filepath.Join(m.cfg.DataDir, memberDirName)
	if err := diskio.OS.MkdirAll(dir); err != nil {
		return fmt.Errorf("cannot access data directory: %w", err)
	}
	lock, err := diskio.OS.Lock(filepath.Join(dir, lockFileName))
	if err != nil {
		return fmt.Errorf("cannot lock data directory %s: %w", m.cfg.DataDir, err)
	}
	m.lock = lock

	peers, err := m.loadIDs(dir)
	if err != nil {
		return err
	}
	retained := m.cfg.MaxSnapshots
	if retained == 0 {
		retained = math.MaxInt // etcd's --max-snapshots 0: unlimited
	}
	m.log, err = raftlog.Open(diskio.OS, dir, raftlog.Options{
		SnapshotsRetained: retained,
		Logger:            m.lg.Named("raftlog"),
	})
	if err != nil {
		return fmt.Errorf("opening the raft log: %w", err)
	}
	var seed [16]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return err
	}
	tick := m.cfg.HeartbeatInterval
	node, err := engine.NewNode(engine.Config{
		ID:                  m.memberID,
		Log:                 m.log,
		Bootstrap:           peers,
		ElectionTicks:       int(m.cfg.ElectionTimeout / tick),
		HeartbeatTicks:      1,
		RequestTimeoutTicks: int((requestTimeoutBase + 2*m.cfg.ElectionTimeout) / tick),
		RequestBytesMax:     m.cfg.RequestBytesMax,
		Rand:                mrand.New(mrand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:]))),
		Logger:              m.lg,
		SnapshotEntries:     m.cfg.SnapshotCount,
		SnapshotPacedBytes:  snapshotPacedBytes,
		QuotaBytes:          m.quotaBytes(),
	})
	if err != nil {
		return err
	}
	m.lg.Info("starting local member", zap.String("local-member-id", idString(m.memberID)), zap.String("cluster-id", idString(m.clusterID)))
	m.loop = newLoop(node, m.log, m.lg, tick, m.cfg.UnsafeNoFsync)
	return nil
}

// loadIDs reads the member and cluster IDs of an existing data dir, or
// derives them from the flags and records them for a new one; it returns
// the bootstrap peers for a new one.
func (m *Member) loadIDs(dir string) ([]engine.Peer, error) {
	name := filepath.Join(dir, idFileName)
	f, err := diskio.OS.Open(name)
	if err == nil {
		defer f.Close()
		var b [20]byte
		if _, err := f.ReadAt(b[:], 0); err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
		if crc32.Checksum(b[:16], crcTable) != binary.BigEndian.Uint32(b[16:]) {
			return nil, fmt.Errorf("%s is corrupt: checksum mismatch", name)
		}
		m.memberID = binary.BigEndian.Uint64(b[0:])
		m.clusterID = binary.BigEndian.Uint64(b[8:])
		m.lg.Info("restarting member", zap.String("data-dir", m.cfg.DataDir))
		return m.bootstrapPeers(), nil
	}
	if !errors.Is(err, diskio.ErrNotExist) {
		return nil, err
	}
	m.memberID, m.clusterID = m.derivedIDs()
	var b [20]byte
	binary.BigEndian.PutUint64(b[0:], m.memberID)
	binary.BigEndian.PutUint64(b[8:], m.clusterID)
	binary.BigEndian.PutUint32(b[16:], crc32.Checksum(b[:16], crcTable))
	tmp := name + ".tmp"
	f, err = diskio.OS.Create(tmp)
	if err != nil {
		return nil, err
	}
	_, werr := f.WriteAt(b[:], 0)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return nil, fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := diskio.OS.Rename(tmp, name); err != nil {
		return nil, err
	}
	if err := diskio.OS.SyncDir(dir); err != nil {
		return nil, err
	}
	m.lg.Info("bootstrapping a new cluster", zap.String("data-dir", m.cfg.DataDir))
	return m.bootstrapPeers(), nil
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// derivedIDs computes the IDs a new member and cluster get from the flags.
func (m *Member) derivedIDs() (member, cluster uint64) {
	names := make([]string, 0, len(m.cfg.InitialCluster))
	for name := range m.cfg.InitialCluster {
		names = append(names, name)
	}
	sort.Strings(names)
	ids := make([]uint64, len(names))
	for i, name := range names {
		ids[i] = memberID(m.cfg.InitialCluster[name], m.cfg.InitialClusterToken)
		if name == m.cfg.Name {
			member = ids[i]
		}
	}
	return member, clusterID(ids)
}

// bootstrapPeers lists the initial voters; raft ignores them when the log
// already holds state.
func (m *Member) bootstrapPeers() []engine.Peer {
	return []engine.Peer{{ID: m.memberID}}
}

// waitReady waits until the member has a leader and has applied what was
// committed when it started.
func (m *Member) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-m.loop.donec:
			return fmt.Errorf("member stopped while starting: %w", m.loop.err)
		case <-time.After(m.cfg.HeartbeatInterval / 4):
		}
		st := m.loop.status.Load()
		if st.Leader != 0 && st.Applied >= st.Commit && m.loop.view.Load() != nil {
			return nil
		}
	}
	return errors.New("timed out waiting for the member to elect a leader and replay its log")
}

func (m *Member) serve() error {
	m.health = health.NewServer()
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(m.cfg.RequestBytesMax + grpcOverheadBytes),
		grpc.MaxSendMsgSize(1<<31 - 1),
		grpc.MaxConcurrentStreams(m.cfg.MaxConcurrentStreams),
		grpc.NumStreamWorkers(grpcStreamWorkers),
	}
	opts = append(opts, keepaliveOptions(m.cfg)...)
	m.grpc = grpc.NewServer(opts...)
	pb.RegisterKVServer(m.grpc, &kvServer{m: m})
	pb.RegisterMaintenanceServer(m.grpc, &maintenanceServer{m: m})
	pb.RegisterClusterServer(m.grpc, &clusterServer{m: m})
	healthpb.RegisterHealthServer(m.grpc, m.health)

	for _, u := range m.cfg.ListenClientURLs {
		ln, err := net.Listen("tcp", u.Host)
		if err != nil {
			return fmt.Errorf("listening for client requests on %s: %w", u.Host, err)
		}
		sl := newSplitListener(ln)
		m.listeners = append(m.listeners, sl)
	}
	mux, err := m.httpHandler()
	if err != nil {
		return err
	}
	for _, sl := range m.listeners {
		go m.grpc.Serve(sl.grpc)
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
		m.https = append(m.https, hs)
		go hs.Serve(sl.http)
		m.lg.Info("ready to serve client requests")
		m.lg.Info("serving client traffic insecurely; this is strongly discouraged!", zap.String("traffic", "grpc+http"), zap.String("address", sl.root.Addr().String()))
	}
	m.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	m.lg.Info("grpc service status changed", zap.String("service", ""), zap.String("status", "SERVING"))
	return nil
}

// Failed is closed when the member stops on its own (a failed fsync).
func (m *Member) Failed() <-chan struct{} { return m.loop.donec }

// Err says why the member stopped on its own.
func (m *Member) Err() error { return m.loop.err }

// Stop stops serving, lets in-flight requests finish for a while, stops
// the engine loop and closes the storage.
func (m *Member) Stop() {
	if m.health != nil {
		m.health.Shutdown()
	}
	for _, sl := range m.listeners {
		sl.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopGracePeriod)
	defer cancel()
	for _, hs := range m.https {
		hs.Shutdown(ctx)
	}
	if m.gwConn != nil {
		m.gwConn.Close()
	}
	if m.grpc != nil {
		stopped := make(chan struct{})
		go func() { m.grpc.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-ctx.Done():
			m.grpc.Stop()
		}
	}
	m.loop.Stop()
	m.closeStorage()
}

func (m *Member) closeStorage() {
	if m.log != nil {
		if err := m.log.Close(); err != nil {
			m.lg.Warn("closing the raft log", zap.Error(err))
		}
	}
	if m.lock != nil {
		m.lock.Close()
	}
}

// ClientURL is the first URL the member serves clients on, with the port
// the listener got (useful with port 0).
func (m *Member) ClientURL() string {
	return "http://" + m.listeners[0].root.Addr().String()
}

func idString(id uint64) string { return fmt.Sprintf("%x", id) }

// advertisedClientURLs are the member's client URLs as MemberList shows
// them.
func (m *Member) advertisedClientURLs() []string { return urlStrings(m.cfg.AdvertiseClientURLs) }

func urlStrings(us []url.URL) []string {
	s := make([]string, len(us))
	for i := range us {
		s[i] = us[i].String()
	}
	return s
}

// header fills a response header's member fields.
func (m *Member) header(h *pb.ResponseHeader) *pb.ResponseHeader {
	if h == nil {
		h = &pb.ResponseHeader{}
	}
	h.ClusterId = m.clusterID
	h.MemberId = m.memberID
	h.RaftTerm = m.loop.status.Load().Term
	return h
}

// versions is what /version answers.
func versions() string {
	return fmt.Sprintf(`{"etcdserver":"%s","etcdcluster":"%s","storage":"%s"}`, version.Version, clusterVersion, clusterVersion)
}
