package server

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/engine"
)

// What a member that does not lead forwards to the leader over the peer
// URLs, as etcd does over its peer HTTP: the body is the request, the
// answer the response, both protobuf; a failure answers 409 with the gRPC
// code in headerGRPCCode and the message as the body.
const (
	peerPromotePath    = "/basalt/promote"
	peerLeaseRenewPath = "/basalt/lease/renew"
	peerLeaseTTLPath   = "/basalt/lease/ttl"

	// headerGRPCCode carries the gRPC code of a forwarded request's error.
	headerGRPCCode = "X-Basalt-Grpc-Code"
	// forwardBytesMax bounds a forwarded request or response read from a
	// peer.
	forwardBytesMax = 64 << 20
)

// forward sends req to the leader's path and decodes its answer into resp.
func (m *Member) forward(ctx context.Context, path string, req, resp proto.Message) error {
	st := m.loop.status.Load()
	var urls []string
	for _, mb := range st.Members {
		if mb.ID == st.Leader {
			urls = mb.PeerURLs
		}
	}
	if st.Leader == 0 || len(urls) == 0 {
		return engine.ErrNoLeader
	}
	body, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, peerRequestTimeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, urls[0]+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	m.tr.setHeaders(hr.Header, st.Leader)
	hresp, err := m.tr.client.Do(hr)
	if err != nil {
		return err
	}
	defer hresp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(hresp.Body, forwardBytesMax))
	if err != nil {
		return err
	}
	if hresp.StatusCode != http.StatusOK {
		code, _ := strconv.Atoi(hresp.Header.Get(headerGRPCCode))
		return status.Error(codes.Code(code), string(b))
	}
	return proto.Unmarshal(b, resp)
}

// serveForwarded decodes a forwarded request into req, runs do and
// answers its response or its error.
func (t *transport) serveForwarded(w http.ResponseWriter, r *http.Request, req proto.Message, do func(context.Context) (proto.Message, error)) {
	if _, ok := t.checkHeaders(w, r); !ok {
		return
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, forwardBytesMax))
	if err == nil {
		err = proto.Unmarshal(b, req)
	}
	if err != nil {
		http.Error(w, "bad forwarded request: "+err.Error(), http.StatusBadRequest)
		return
	}
	resp, err := do(r.Context())
	if err == nil {
		b, err = proto.Marshal(resp)
	}
	if err != nil {
		st, _ := status.FromError(toGRPC(err))
		w.Header().Set(headerGRPCCode, strconv.Itoa(int(st.Code())))
		w.WriteHeader(http.StatusConflict)
		io.WriteString(w, st.Message())
		return
	}
	w.Write(b)
}

func (t *transport) servePromote(w http.ResponseWriter, r *http.Request) {
	req := new(pb.MemberPromoteRequest)
	t.serveForwarded(w, r, req, func(ctx context.Context) (proto.Message, error) {
		list, err := t.member.promote(ctx, req.ID)
		return &pb.MemberListResponse{Members: list}, err
	})
}

func (t *transport) serveLeaseRenew(w http.ResponseWriter, r *http.Request) {
	req := new(pb.LeaseKeepAliveRequest)
	t.serveForwarded(w, r, req, func(ctx context.Context) (proto.Message, error) {
		ttl, err := t.member.renewLocal(ctx, req.ID)
		return &pb.LeaseKeepAliveResponse{ID: req.ID, TTL: ttl}, err
	})
}

func (t *transport) serveLeaseTTL(w http.ResponseWriter, r *http.Request) {
	req := new(pb.LeaseTimeToLiveRequest)
	t.serveForwarded(w, r, req, func(ctx context.Context) (proto.Message, error) {
		return t.member.leaseTimeToLiveLocal(ctx, req)
	})
}
