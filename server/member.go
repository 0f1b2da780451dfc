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
	"slices"
	"sort"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/raft/v3/raftpb"
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
	// publishTimeout bounds one attempt to publish the member's attributes.
	publishTimeout = 5 * time.Second
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

	lock  io.Closer
	log   *raftlog.Log
	loop  *loop
	watch *watchHub
	tr    *transport
	// initialPeers are the peer URLs of the members known from the flags
	// (or, joining, from the cluster), by ID: where messages go until the
	// members table is applied.
	initialPeers map[uint64][]string
	// removedc is closed once the member learns it was removed.
	removedc    chan struct{}
	removedOnce sync.Once
	watchDone   chan struct{}
	// leaseIDs picks the IDs of leases granted without one.
	leaseIDs *idGenerator
	// tokens are the simple auth tokens this member issued.
	tokens tokenProvider

	health    *health.Server
	grpc      *grpc.Server
	gwConn    *grpc.ClientConn
	https     []*http.Server
	listeners []*splitListener
}

// Start opens (or bootstraps) the member in cfg.DataDir, waits until it
// can serve, and starts serving clients.
func Start(cfg *Config, lg *zap.Logger) (*Member, error) {
	m := &Member{cfg: cfg, lg: lg, removedc: make(chan struct{}), watchDone: make(chan struct{})}
	if err := m.open(); err != nil {
		if m.tr != nil {
			m.tr.stop()
		}
		m.closeStorage()
		return nil, err
	}
	go m.loop.run()
	go m.watchMembers()
	err := m.waitReady()
	if err == nil {
		err = m.publish()
	}
	if err != nil {
		m.stopCore()
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
	m.tr = newTransport(m.lg, m.memberID, m.clusterID)
	m.tr.member = m
	if err := m.tr.listen(m.cfg.ListenPeerURLs); err != nil {
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
		Join:                len(peers) == 0,
		ElectionTicks:       int(m.cfg.ElectionTimeout / tick),
		HeartbeatTicks:      1,
		TickDuration:        tick,
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
	m.loop.tr = m.tr
	m.tr.loop = m.loop
	m.tr.removed = m.markRemoved
	m.tr.setPeers(m.initialPeers)
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
		if m.cfg.InitialClusterState == "existing" {
			// The log holds the cluster; if it is still empty, the leader
			// sends it again.
			m.initialPeers = m.flagPeers()
			return nil, nil
		}
		return m.bootstrapPeers(), nil
	}
	if !errors.Is(err, diskio.ErrNotExist) {
		return nil, err
	}
	var peers []engine.Peer
	if m.cfg.InitialClusterState == "existing" {
		if err := m.joinIDs(); err != nil {
			return nil, err
		}
	} else {
		m.memberID, m.clusterID = m.derivedIDs()
		peers = m.bootstrapPeers()
	}
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
	if peers != nil {
		m.lg.Info("bootstrapping a new cluster", zap.String("data-dir", m.cfg.DataDir))
	} else {
		m.lg.Info("joining an existing cluster", zap.String("data-dir", m.cfg.DataDir))
	}
	return peers, nil
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

// bootstrapPeers lists the initial voters from --initial-cluster, with
// their names and peer URLs; raft ignores them when the log already holds
// state. It also sets initialPeers from them.
func (m *Member) bootstrapPeers() []engine.Peer {
	names := make([]string, 0, len(m.cfg.InitialCluster))
	for name := range m.cfg.InitialCluster {
		names = append(names, name)
	}
	sort.Strings(names)
	m.initialPeers = m.flagPeers()
	peers := make([]engine.Peer, 0, len(names))
	for _, name := range names {
		urls := m.cfg.InitialCluster[name]
		id := memberID(urls, m.cfg.InitialClusterToken)
		peers = append(peers, engine.Peer{ID: id, Context: engine.EncodeMember(&pb.Member{ID: id, Name: name, PeerURLs: urlStrings(urls)})})
	}
	return peers
}

// flagPeers are the peer URLs --initial-cluster gives, by the IDs they
// would have in a new cluster.
func (m *Member) flagPeers() map[uint64][]string {
	peers := make(map[uint64][]string, len(m.cfg.InitialCluster))
	for _, urls := range m.cfg.InitialCluster {
		peers[memberID(urls, m.cfg.InitialClusterToken)] = urlStrings(urls)
	}
	return peers
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
	m.leaseIDs = newIDGenerator(m.memberID, time.Now())
	m.health = health.NewServer()
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(m.cfg.RequestBytesMax + grpcOverheadBytes),
		grpc.MaxSendMsgSize(1<<31 - 1),
		grpc.MaxConcurrentStreams(m.cfg.MaxConcurrentStreams),
		grpc.NumStreamWorkers(grpcStreamWorkers),
		// Watch sends events encoded once for all their watchers (watchenc.go).
		grpc.ForceServerCodecV2(newWatchCodec()),
	}
	opts = append(opts, keepaliveOptions(m.cfg)...)
	tokens, err := newTokenProvider(m.cfg)
	if err != nil {
		return err
	}
	m.tokens = tokens
	if ts, ok := tokens.(*simpleTokens); ok {
		m.loop.tokens.Store(ts)
	}
	opts = append(opts, grpc.ChainUnaryInterceptor(m.learnerUnary, m.authUnary), grpc.ChainStreamInterceptor(m.learnerStream, m.authStream))
	m.grpc = grpc.NewServer(opts...)
	pb.RegisterKVServer(m.grpc, &kvServer{m: m})
	pb.RegisterMaintenanceServer(m.grpc, &maintenanceServer{m: m})
	pb.RegisterClusterServer(m.grpc, &clusterServer{m: m})
	pb.RegisterLeaseServer(m.grpc, &leaseServer{m: m})
	pb.RegisterAuthServer(m.grpc, &authServer{m: m})
	m.startWatch()
	pb.RegisterWatchServer(m.grpc, &watchServer{m: m})
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
	m.stopCore()
}

// stopCore stops the engine loop and the peer transport and closes the
// storage.
func (m *Member) stopCore() {
	m.loop.Stop()
	if m.watch != nil {
		m.watch.stop()
	}
	m.tr.stop()
	<-m.watchDone
	m.closeStorage()
}

// Removed is closed once the member learns it was removed from the
// cluster; the host then stops it, as etcd exits.
func (m *Member) Removed() <-chan struct{} { return m.removedc }

func (m *Member) markRemoved() {
	m.removedOnce.Do(func() {
		m.lg.Warn("the member has been permanently removed from the cluster")
		close(m.removedc)
	})
}

// watchMembers keeps the transport's peers in step with the members
// table, and notices this member's removal.
func (m *Member) watchMembers() {
	defer close(m.watchDone)
	for {
		select {
		case <-m.loop.membersc:
		case <-m.loop.donec:
			return
		}
		st := m.loop.status.Load()
		if len(st.Members) > 0 {
			peers := make(map[uint64][]string, len(st.Members))
			for _, mb := range st.Members {
				peers[mb.ID] = mb.PeerURLs
			}
			m.tr.setPeers(peers)
		}
		removed := make(map[uint64]bool, len(st.RemovedIDs))
		for _, id := range st.RemovedIDs {
			removed[id] = true
		}
		m.tr.mu.Lock()
		m.tr.isRemoved = func(id uint64) bool { return removed[id] }
		m.tr.mu.Unlock()
		if st.Removed {
			m.markRemoved()
		}
	}
}

// publish records this member's name and client URLs in the members
// table, as etcd does once it starts, and waits until it is applied.
func (m *Member) publish() error {
	req := &pb.InternalRaftRequest{ClusterMemberAttrSet: &membershippb.ClusterMemberAttrSetRequest{
		Member_ID:        m.memberID,
		MemberAttributes: &membershippb.Attributes{Name: m.cfg.Name, ClientUrls: m.advertisedClientURLs()},
	}}
	deadline := time.Now().Add(readyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
		_, err := m.loop.do(ctx, engine.Request{Op: req})
		cancel()
		if err == nil {
			err = m.publishPeerURLs()
		}
		if err == nil {
			m.lg.Info("published local member to cluster through raft", zap.String("local-member-id", idString(m.memberID)),
				zap.String("local-member-attributes", fmt.Sprintf("{Name:%s ClientURLs:%v}", m.cfg.Name, m.advertisedClientURLs())),
				zap.String("cluster-id", idString(m.clusterID)))
			return nil
		}
		if errors.Is(err, errStopped) || time.Now().After(deadline) {
			return fmt.Errorf("publishing the member's attributes: %w", err)
		}
		m.lg.Warn("failed to publish local member to cluster through raft; retrying", zap.Error(err))
		select {
		case <-m.loop.donec:
			return fmt.Errorf("member stopped while starting: %w", m.loop.err)
		case <-time.After(m.cfg.HeartbeatInterval):
		}
	}
}

// publishPeerURLs records this member's peer URLs when the members table
// lacks them: a data dir bootstrapped before the table existed holds a
// bootstrap entry without attributes.
func (m *Member) publishPeerURLs() error {
	for _, mb := range m.loop.status.Load().Members {
		if mb.ID != m.memberID || len(mb.PeerURLs) > 0 {
			continue
		}
		typ := raftpb.ConfChangeUpdateNode
		ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
		defer cancel()
		_, err := m.loop.do(ctx, engine.Request{ConfChange: &raftpb.ConfChange{
			Type: &typ, NodeId: new(m.memberID), Context: engine.EncodeMember(&pb.Member{ID: m.memberID, PeerURLs: urlStrings(m.cfg.AdvertisePeerURLs)}),
		}})
		return err
	}
	return nil
}

// joinIDs asks the running cluster, through the peer URLs of
// --initial-cluster, for its ID and the ID it gave this member when it was
// added (etcdctl member add), found by this member's peer URLs.
func (m *Member) joinIDs() error {
	own := urlStrings(m.cfg.AdvertisePeerURLs)
	sort.Strings(own)
	var errs []error
	for name, urls := range m.cfg.InitialCluster {
		if name == m.cfg.Name {
			continue
		}
		for _, u := range urls {
			resp, err := fetchMembers(u.String())
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, mb := range resp.Members {
				pu := slices.Clone(mb.PeerURLs)
				sort.Strings(pu)
				if slices.Equal(pu, own) {
					m.memberID, m.clusterID = mb.ID, resp.Header.GetClusterId()
					m.initialPeers = make(map[uint64][]string, len(resp.Members))
					for _, mb := range resp.Members {
						m.initialPeers[mb.ID] = mb.PeerURLs
					}
					return nil
				}
			}
			return fmt.Errorf("error validating peerURLs: member %q with peer URLs %v is not in the cluster's members (add it first with 'etcdctl member add')", m.cfg.Name, own)
		}
	}
	return fmt.Errorf("cannot fetch the cluster's members from the peers of --initial-cluster: %w", errors.Join(errs...))
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
