package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	gwruntime "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/etcdserverpb/gw"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/basaltdb/basalt/engine"
)

// healthTimeout bounds the read /health does, as etcd's.
const healthTimeout = time.Second

// httpHandler serves what etcd serves over HTTP/1.1 on the client port:
// the JSON gateway under /v3/, /health, /livez, /readyz, /version,
// /metrics and, with --enable-pprof, /debug/pprof/.
func (m *Member) httpHandler() (http.Handler, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", m.serveHealth)
	mux.HandleFunc("/livez", serveOK)
	mux.HandleFunc("/readyz", serveOK)
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, versions())
	})
	mux.Handle("/metrics", promhttp.Handler())
	if m.cfg.EnablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if m.cfg.EnableGRPCGateway {
		gwmux, err := m.gateway()
		if err != nil {
			return nil, err
		}
		mux.Handle("/v3/", gwmux)
		mux.Handle("/v3beta/", http.StripPrefix("/v3beta", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.URL.Path = "/v3" + r.URL.Path
			gwmux.ServeHTTP(w, r)
		})))
	}
	return cors(mux), nil
}

// cors adds the headers etcd adds to every HTTP answer with its default
// --cors=*, and answers preflight requests itself.
func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Add("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE")
		h.Add("Access-Control-Allow-Origin", "*")
		h.Add("Access-Control-Allow-Headers", "accept, content-type, authorization")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// gateway builds the grpc-gateway mux with etcd's JSON conventions, over
// a loopback gRPC connection to this member.
func (m *Member) gateway() (http.Handler, error) {
	addr := m.listeners[0].root.Addr().String()
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<31-1)))
	if err != nil {
		return nil, fmt.Errorf("dialing the gateway's loopback connection: %w", err)
	}
	m.gwConn = conn
	gwmux := gwruntime.NewServeMux(gwruntime.WithMarshalerOption(gwruntime.MIMEWildcard, &gwruntime.HTTPBodyMarshaler{
		Marshaler: &gwruntime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		},
	}))
	ctx := context.Background()
	for _, register := range []func(context.Context, *gwruntime.ServeMux, *grpc.ClientConn) error{
		gw.RegisterKVHandler, gw.RegisterMaintenanceHandler, gw.RegisterClusterHandler, gw.RegisterLeaseHandler,
		gw.RegisterWatchHandler, gw.RegisterAuthHandler,
	} {
		if err := register(ctx, gwmux, conn); err != nil {
			return nil, err
		}
	}
	return gwmux, nil
}

func serveOK(w http.ResponseWriter, r *http.Request) {
	io.WriteString(w, "ok\n")
}

// serveHealth answers /health as etcd does: healthy when the member has a
// leader and can serve a read (linearizable unless ?serializable=true).
func (m *Member) serveHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	reason := ""
	if m.loop.status.Load().Leader == 0 {
		reason = "RAFT NO LEADER"
	} else {
		ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
		defer cancel()
		if r.URL.Query().Get("serializable") != "true" {
			if err := m.readBarrier(ctx); err != nil {
				reason = "RANGE ERROR:" + toGRPC(err).Error()
			}
		}
		if reason == "" {
			if _, err := engine.Range(m.loop.view.Load(), &pb.RangeRequest{Key: []byte("health")}); err != nil {
				reason = "RANGE ERROR:" + err.Error()
			}
		}
	}
	if reason != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintf(w, `{"health":"%t","reason":"%s"}`, reason == "", strings.ReplaceAll(reason, `"`, `\"`))
}
