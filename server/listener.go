package server

import (
	"bufio"
	"bytes"
	"net"
	"sync"
	"time"
)

// Limits of the client port's protocol sniffing.
const (
	// sniffTimeout bounds how long a new connection may take to send the
	// bytes that tell gRPC from HTTP/1.
	sniffTimeout = 10 * time.Second
	// acceptQueueMax bounds the sniffed connections waiting for Accept.
	acceptQueueMax = 128
)

// http2Preface starts every HTTP/2 (and so gRPC) connection with prior
// knowledge; an HTTP/1 request line never starts this way.
var http2Preface = []byte("PRI * HTTP/2.0")

// splitListener serves gRPC and HTTP/1.1 on one port, as etcd does: each
// accepted connection goes to the gRPC listener when it opens with the
// HTTP/2 preface and to the HTTP listener otherwise.
type splitListener struct {
	root  net.Listener
	grpc  *childListener
	http  *childListener
	close sync.Once
	done  chan struct{}
}

func newSplitListener(root net.Listener) *splitListener {
	s := &splitListener{root: root, done: make(chan struct{})}
	s.grpc = &childListener{parent: s, conns: make(chan net.Conn, acceptQueueMax)}
	s.http = &childListener{parent: s, conns: make(chan net.Conn, acceptQueueMax)}
	go s.serve()
	return s
}

func (s *splitListener) serve() {
	for {
		conn, err := s.root.Accept()
		if err != nil {
			s.Close()
			return
		}
		go s.route(conn)
	}
}

func (s *splitListener) route(conn net.Conn) {
	br := bufio.NewReaderSize(conn, len(http2Preface))
	conn.SetReadDeadline(time.Now().Add(sniffTimeout))
	head, err := br.Peek(len(http2Preface))
	conn.SetReadDeadline(time.Time{})
	if err != nil && len(head) == 0 {
		conn.Close()
		return
	}
	target := s.http
	if bytes.Equal(head, http2Preface) {
		target = s.grpc
	}
	select {
	case target.conns <- &peekedConn{Conn: conn, r: br}:
	case <-s.done:
		conn.Close()
	}
}

// Close stops accepting on the port; connections already handed out stay
// open.
func (s *splitListener) Close() error {
	var err error
	s.close.Do(func() {
		close(s.done)
		err = s.root.Close()
	})
	return err
}

type childListener struct {
	parent *splitListener
	conns  chan net.Conn
}

func (c *childListener) Accept() (net.Conn, error) {
	select {
	case conn := <-c.conns:
		return conn, nil
	case <-c.parent.done:
		return nil, net.ErrClosed
	}
}

func (c *childListener) Close() error   { return c.parent.Close() }
func (c *childListener) Addr() net.Addr { return c.parent.root.Addr() }

// peekedConn replays the sniffed bytes before the rest of the stream.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) {
	if p.r.Buffered() > 0 {
		return p.r.Read(b)
	}
	return p.Conn.Read(b)
}
