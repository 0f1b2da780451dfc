package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/engine"
	"github.com/basaltdb/basalt/raftlog"
)

// The peer protocol, basalt's own (all members are basalt): plain HTTP on
// the peer URLs.
//
//	POST /basalt/raft       Upgrade: basalt-raft. After "101 Switching
//	                        Protocols" the connection carries one way, from
//	                        the dialer, a stream of frames: length u32
//	                        big-endian, then a raftpb.Message. One stream
//	                        per ordered pair of members.
//	POST /basalt/snapshot   body: one frame holding a MsgSnap, then the
//	                        snapshot body (raftlog's, checked against the
//	                        descriptor in the message). 204 once the
//	                        receiver holds it durably and has queued the
//	                        message for its node.
//	GET  /basalt/members    the members table, a protojson MemberListResponse
//	                        whose header carries the cluster ID (a member
//	                        joining with --initial-cluster-state=existing).
//	POST /basalt/promote, /basalt/lease/renew, /basalt/lease/ttl
//	                        what only the leader serves, forwarded to it
//	                        (forward.go).
//
// Every request carries X-Basalt-Cluster-ID and X-Basalt-From; a member
// refuses a request of another cluster with 412 and one from a member it
// has removed with 410.
const (
	peerRaftPath     = "/basalt/raft"
	peerSnapshotPath = "/basalt/snapshot"
	peerMembersPath  = "/basalt/members"

	headerClusterID = "X-Basalt-Cluster-Id"
	headerFrom      = "X-Basalt-From"
	headerTo        = "X-Basalt-To"
	upgradeProto    = "basalt-raft"
)

// Limits of the peer transport.
const (
	// peerQueueMax bounds the messages waiting for one peer's stream; a
	// message beyond it is dropped and the peer reported unreachable, as
	// etcd's streams do.
	peerQueueMax = 4096
	// peerBatchMax bounds the messages written in one write.
	peerBatchMax = 256
	// frameBytesMax bounds one frame: a raft message of entries up to
	// raft's size limit plus one entry of up to --max-request-bytes.
	frameBytesMax = 256 << 20
	// peerDialTimeout bounds a connection attempt and peerWriteTimeout one
	// write: a peer that takes longer is unreachable.
	peerDialTimeout  = time.Second
	peerWriteTimeout = 5 * time.Second
	// peerBackoffMin and peerBackoffMax bound the wait between attempts to
	// reach a peer, doubled at each failure.
	peerBackoffMin = 50 * time.Millisecond
	peerBackoffMax = time.Second
	// peerErrorLogInterval rate-limits the log of a peer that stays down.
	peerErrorLogInterval = 10 * time.Second
	// peerRequestTimeout bounds the small peer requests (members, promote).
	peerRequestTimeout = 5 * time.Second
)

// Errors of the peer transport.
var (
	errClusterIDMismatch = errors.New("server: peer belongs to another cluster (cluster ID mismatch)")
	errPeerRemoved       = errors.New("server: this member was removed from the cluster")
)

// transport carries raft messages between this member and its peers.
type transport struct {
	lg        *zap.Logger
	self      uint64
	clusterID uint64
	loop      *loop
	member    *Member
	client    *http.Client
	// removed is called once a peer says this member was removed.
	removed func()

	mu sync.Mutex
	// peers are the members messages go to, by ID; guarded by mu.
	peers map[uint64]*peer
	// isRemoved reports whether a member was removed from the cluster;
	// guarded by mu.
	isRemoved func(id uint64) bool

	servers   []*http.Server
	listeners []net.Listener
	stopc     chan struct{}
	wg        sync.WaitGroup
}

// peer is the outbound side towards one member: a bounded queue drained
// by one goroutine onto one stream, redialled with backoff.
type peer struct {
	t    *transport
	id   uint64
	urls atomic.Pointer[[]string]
	msgc chan *raftpb.Message
	// activeSince is when the current stream connected, in Unix
	// nanoseconds; 0 while there is none.
	activeSince atomic.Int64
	// snapshotting is set while a snapshot is being sent to the peer.
	snapshotting atomic.Bool
	stopc        chan struct{}
}

func newTransport(lg *zap.Logger, self, clusterID uint64) *transport {
	return &transport{
		lg:        lg.Named("transport"),
		self:      self,
		clusterID: clusterID,
		client:    &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{Timeout: peerDialTimeout}).DialContext}},
		peers:     make(map[uint64]*peer),
		isRemoved: func(uint64) bool { return false },
		stopc:     make(chan struct{}),
	}
}

// listen starts serving the peer URLs.
func (t *transport) listen(urls []url.URL) error {
	mux := http.NewServeMux()
	mux.HandleFunc(peerRaftPath, t.serveRaft)
	mux.HandleFunc(peerSnapshotPath, t.serveSnapshot)
	mux.HandleFunc(peerMembersPath, t.serveMembers)
	mux.HandleFunc(peerPromotePath, t.servePromote)
	mux.HandleFunc(peerLeaseRenewPath, t.serveLeaseRenew)
	mux.HandleFunc(peerLeaseTTLPath, t.serveLeaseTTL)
	for _, u := range urls {
		ln, err := net.Listen("tcp", u.Host)
		if err != nil {
			return fmt.Errorf("listening for peers on %s: %w", u.Host, err)
		}
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		t.listeners = append(t.listeners, ln)
		t.servers = append(t.servers, hs)
		go hs.Serve(ln)
		t.lg.Info("serving peer traffic insecurely; this is strongly discouraged!", zap.String("address", ln.Addr().String()))
	}
	return nil
}

// peerAddr is the first address the member listens for peers on.
func (t *transport) peerAddr() string { return t.listeners[0].Addr().String() }

// setPeers makes the peers exactly urls' members other than this one:
// new ones start, gone ones stop, moved ones use their new URLs.
func (t *transport) setPeers(urls map[uint64][]string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, p := range t.peers {
		if _, ok := urls[id]; !ok {
			close(p.stopc)
			delete(t.peers, id)
		}
	}
	for id, us := range urls {
		if id == t.self {
			continue
		}
		us := slices.Clone(us)
		if p, ok := t.peers[id]; ok {
			p.urls.Store(&us)
			continue
		}
		p := &peer{t: t, id: id, msgc: make(chan *raftpb.Message, peerQueueMax), stopc: make(chan struct{})}
		p.urls.Store(&us)
		t.peers[id] = p
		t.wg.Add(1)
		go p.run()
	}
}

func (t *transport) peer(id uint64) *peer {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.peers[id]
}

// send queues m for its peer without blocking; false means it was
// dropped (unknown peer or full queue) and the peer is unreachable.
func (t *transport) send(m *raftpb.Message) bool {
	p := t.peer(m.GetTo())
	if p == nil {
		return false
	}
	// Messages wait only for a working stream: held while the peer is
	// down, a proposal would reach the leader long after its client gave
	// up (raft retries what matters, as etcd's streams drop too).
	if p.activeSince.Load() == 0 {
		return false
	}
	select {
	case p.msgc <- m:
		return true
	default:
		return false
	}
}

// activeSince is when the stream to member id connected; zero when it
// is not connected (etcd's Transporter.ActiveSince).
func (t *transport) activeSince(id uint64) time.Time {
	p := t.peer(id)
	if p == nil {
		return time.Time{}
	}
	ns := p.activeSince.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// stop closes the listeners and every stream, and waits for the peers'
// goroutines.
func (t *transport) stop() {
	close(t.stopc)
	for _, hs := range t.servers {
		hs.Close()
	}
	t.mu.Lock()
	for id, p := range t.peers {
		close(p.stopc)
		delete(t.peers, id)
	}
	t.mu.Unlock()
	t.wg.Wait()
	t.client.CloseIdleConnections()
}

func (t *transport) setHeaders(h http.Header, to uint64) {
	h.Set(headerClusterID, strconv.FormatUint(t.clusterID, 16))
	h.Set(headerFrom, strconv.FormatUint(t.self, 16))
	h.Set(headerTo, strconv.FormatUint(to, 16))
}

// checkHeaders refuses a request of another cluster, or from a removed
// member, answering it; it returns the sender's ID.
func (t *transport) checkHeaders(w http.ResponseWriter, r *http.Request) (from uint64, ok bool) {
	cid, err := strconv.ParseUint(r.Header.Get(headerClusterID), 16, 64)
	if err != nil || cid != t.clusterID {
		t.lg.Warn("refused a peer of another cluster", zap.String("remote-addr", r.RemoteAddr),
			zap.String("remote-cluster-id", r.Header.Get(headerClusterID)), zap.String("local-cluster-id", idString(t.clusterID)))
		w.Header().Set(headerClusterID, strconv.FormatUint(t.clusterID, 16))
		http.Error(w, fmt.Sprintf("cluster ID mismatch: this member is in cluster %x, the request is for cluster %s", t.clusterID, r.Header.Get(headerClusterID)), http.StatusPreconditionFailed)
		return 0, false
	}
	from, _ = strconv.ParseUint(r.Header.Get(headerFrom), 16, 64)
	t.mu.Lock()
	removed := t.isRemoved(from)
	t.mu.Unlock()
	if removed {
		http.Error(w, "the member has been permanently removed from the cluster", http.StatusGone)
		return 0, false
	}
	return from, true
}

// serveRaft takes one inbound stream and steps its messages into the loop.
func (t *transport) serveRaft(w http.ResponseWriter, r *http.Request) {
	from, ok := t.checkHeaders(w, r)
	if !ok {
		return
	}
	if r.Header.Get("Upgrade") != upgradeProto {
		http.Error(w, "expected Upgrade: "+upgradeProto, http.StatusBadRequest)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	conn.SetDeadline(time.Time{})
	if _, err := io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: "+upgradeProto+"\r\nConnection: Upgrade\r\n\r\n"); err != nil {
		return
	}
	go func() {
		// The stream ends with the transport: closing the connection
		// ends the read below.
		select {
		case <-t.stopc:
		case <-r.Context().Done():
		}
		conn.Close()
	}()
	for {
		m, err := readFrame(brw.Reader)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				t.lg.Debug("peer stream ended", zap.String("remote-peer-id", idString(from)), zap.Error(err))
			}
			return
		}
		if m.GetTo() != t.self {
			continue
		}
		if !t.loop.receive(inbound{msg: m}, t.stopc) {
			return
		}
	}
}

// serveSnapshot receives a MsgSnap with its body, writes the body into
// the log and then lets the loop step the message.
func (t *transport) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	from, ok := t.checkHeaders(w, r)
	if !ok {
		return
	}
	br := bufio.NewReader(r.Body)
	m, err := readFrame(br)
	if err != nil || m.GetType() != raftpb.MsgSnap || m.GetTo() != t.self {
		http.Error(w, fmt.Sprintf("bad snapshot message: %v", err), http.StatusBadRequest)
		return
	}
	n, err := t.receiveSnapshot(r.Context(), m.GetSnapshot(), br)
	if err == nil && !t.loop.receive(inbound{msg: m}, t.stopc) {
		err = errStopped
	}
	if err != nil {
		t.lg.Warn("receiving a snapshot failed", zap.String("remote-peer-id", idString(from)), zap.Error(err))
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	t.lg.Info("received snapshot", zap.String("remote-peer-id", idString(from)),
		zap.Uint64("index", m.GetSnapshot().GetMetadata().GetIndex()), zap.Int64("bytes", n))
	w.WriteHeader(http.StatusNoContent)
}

// receiveSnapshot writes the body of snap, read from body, into the log
// as a committed snapshot file, as raftlog's ReceiveSnapshot does, but
// only the file's creation runs on the loop goroutine, which owns the
// log: the loop never waits for the network or the fsync.
func (t *transport) receiveSnapshot(ctx context.Context, snap *raftpb.Snapshot, body io.Reader) (int64, error) {
	meta := snap.GetMetadata()
	d, err := raftlog.ParseDescriptor(snap.GetData())
	if err != nil {
		return 0, err
	}
	if d.Index != meta.GetIndex() || d.Term != meta.GetTerm() {
		return 0, fmt.Errorf("%w: descriptor of snapshot %d/%d in a message for %d/%d", raftlog.ErrCorrupt, d.Index, d.Term, meta.GetIndex(), meta.GetTerm())
	}
	var sw *raftlog.SnapshotWriter
	var cerr error
	if err := t.loop.call(ctx, func(*engine.Node) { sw, cerr = t.loop.log.CreateSnapshot(meta) }); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	cw := &crcWriter{w: sw}
	n, err := io.Copy(cw, io.LimitReader(body, int64(d.BodyBytes)))
	if err == nil && (uint64(n) != d.BodyBytes || cw.crc != d.BodyCRC) {
		err = fmt.Errorf("%w: received snapshot %d/%d: %d body bytes of checksum %08x, descriptor says %d of %08x",
			raftlog.ErrCorrupt, d.Index, d.Term, n, cw.crc, d.BodyBytes, d.BodyCRC)
	}
	if err != nil {
		return n, errors.Join(err, sw.Abort())
	}
	return n, sw.Commit()
}

// crcWriter checksums (CRC-32C) what passes through it.
type crcWriter struct {
	w   io.Writer
	crc uint32
}

func (c *crcWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.crc = crc32.Update(c.crc, crcTable, p[:n])
	return n, err
}

// run keeps a stream to the peer open and drains its queue onto it.
func (p *peer) run() {
	defer p.t.wg.Done()
	backoff := peerBackoffMin
	var lastLog time.Time
	for {
		conn, err := p.dial()
		if err == nil {
			backoff = peerBackoffMin
			p.activeSince.Store(time.Now().UnixNano())
			p.t.lg.Info("peer stream connected", zap.String("remote-peer-id", idString(p.id)))
			err = p.stream(conn)
			p.activeSince.Store(0)
			conn.Close()
			p.drop()
		}
		select {
		case <-p.stopc:
			return
		default:
		}
		p.t.loop.report(report{to: p.id})
		if errors.Is(err, errPeerRemoved) {
			p.t.removed()
		}
		if time.Since(lastLog) >= peerErrorLogInterval || errors.Is(err, errClusterIDMismatch) {
			p.t.lg.Warn("peer unreachable", zap.String("remote-peer-id", idString(p.id)), zap.Error(err))
			lastLog = time.Now()
		}
		select {
		case <-p.stopc:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, peerBackoffMax)
	}
}

// drop discards the queued messages of a stream that failed; run then
// reports the peer unreachable.
func (p *peer) drop() {
	for {
		select {
		case <-p.msgc:
		default:
			return
		}
	}
}

// dial opens a stream to the first of the peer's URLs that answers.
func (p *peer) dial() (net.Conn, error) {
	var errs []error
	for _, u := range *p.urls.Load() {
		pu, err := url.Parse(u)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		conn, err := p.dialURL(pu)
		if err == nil {
			return conn, nil
		}
		if errors.Is(err, errClusterIDMismatch) || errors.Is(err, errPeerRemoved) {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func (p *peer) dialURL(u *url.URL) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", u.Host, peerDialTimeout)
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequest(http.MethodPost, u.Scheme+"://"+u.Host+peerRaftPath, nil)
	p.t.setHeaders(req.Header, p.id)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", upgradeProto)
	conn.SetDeadline(time.Now().Add(peerDialTimeout))
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		conn.Close()
		switch resp.StatusCode {
		case http.StatusPreconditionFailed:
			return nil, fmt.Errorf("%w: %s (local cluster ID %x)", errClusterIDMismatch, msg, p.t.clusterID)
		case http.StatusGone:
			return nil, errPeerRemoved
		}
		return nil, fmt.Errorf("peer %x at %s answered %s: %s", p.id, u.Host, resp.Status, msg)
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}

// stream writes queued messages in batches until the stream fails or the
// peer is stopped. A stream is one way: the peer never writes to it, so a
// read that returns means it is gone.
func (p *peer) stream(conn net.Conn) error {
	gone := make(chan struct{})
	go func() {
		io.Copy(io.Discard, conn)
		close(gone)
	}()
	var buf []byte
	for {
		var m *raftpb.Message
		select {
		case m = <-p.msgc:
		case <-p.stopc:
			return nil
		case <-gone:
			return errors.New("peer closed the stream")
		}
		buf = appendFrame(buf[:0], m)
		for range peerBatchMax - 1 {
			select {
			case m = <-p.msgc:
				buf = appendFrame(buf, m)
				continue
			default:
			}
			break
		}
		conn.SetWriteDeadline(time.Now().Add(peerWriteTimeout))
		if _, err := conn.Write(buf); err != nil {
			return err
		}
	}
}

// sendSnapshot streams a MsgSnap and its body to the peer on a goroutine
// of its own, and reports the outcome to the loop; body is closed.
func (t *transport) sendSnapshot(m *raftpb.Message, body io.ReadCloser) {
	p := t.peer(m.GetTo())
	if p == nil || !p.snapshotting.CompareAndSwap(false, true) {
		body.Close()
		t.loop.report(report{to: m.GetTo(), snapshot: true})
		return
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer p.snapshotting.Store(false)
		defer body.Close()
		start := time.Now()
		err := p.postSnapshot(m, body)
		if err != nil {
			t.lg.Warn("sending a snapshot failed", zap.String("remote-peer-id", idString(p.id)),
				zap.Uint64("index", m.GetSnapshot().GetMetadata().GetIndex()), zap.Error(err))
		} else {
			t.lg.Info("sent snapshot", zap.String("remote-peer-id", idString(p.id)),
				zap.Uint64("index", m.GetSnapshot().GetMetadata().GetIndex()), zap.Duration("took", time.Since(start)))
		}
		t.loop.report(report{to: p.id, snapshot: true, delivered: err == nil})
	}()
}

func (p *peer) postSnapshot(m *raftpb.Message, body io.Reader) error {
	urls := *p.urls.Load()
	if len(urls) == 0 {
		return errors.New("peer has no URL")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-p.stopc:
		case <-ctx.Done():
		}
		cancel()
	}()
	u, err := url.Parse(urls[0])
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.Scheme+"://"+u.Host+peerSnapshotPath,
		io.MultiReader(bytes.NewReader(appendFrame(nil, m)), body))
	if err != nil {
		return err
	}
	p.t.setHeaders(req.Header, p.id)
	resp, err := p.t.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("peer answered %s: %s", resp.Status, msg)
	}
	return nil
}

func appendFrame(buf []byte, m *raftpb.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("server: encoding a raft message: %v", err))
	}
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(b)))
	return append(buf, b...)
}

func readFrame(r io.Reader) (*raftpb.Message, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > frameBytesMax {
		return nil, fmt.Errorf("frame of %d bytes exceeds %d", n, frameBytesMax)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("truncated frame: %w", err)
	}
	m := new(raftpb.Message)
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("bad frame: %w", err)
	}
	return m, nil
}
