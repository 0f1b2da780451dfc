package server

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/basaltdb/basalt/engine"
	"github.com/basaltdb/basalt/engine/mvcc"
)

// grpcErrors maps the core's errors to etcd's gRPC errors, whose code and
// message are the API clients match on.
var grpcErrors = []struct {
	err  error
	grpc error
}{
	{mvcc.ErrCompacted, rpctypes.ErrGRPCCompacted},
	{mvcc.ErrFutureRev, rpctypes.ErrGRPCFutureRev},
	{engine.ErrLeaseNotFound, rpctypes.ErrGRPCLeaseNotFound},
	{engine.ErrLeaseExist, rpctypes.ErrGRPCLeaseExist},
	{engine.ErrLeaseTTLTooLarge, rpctypes.ErrGRPCLeaseTTLTooLarge},
	{engine.ErrNotLeader, rpctypes.ErrGRPCNotLeader},
	{engine.ErrKeyNotFound, rpctypes.ErrGRPCKeyNotFound},
	{engine.ErrTooManyRequests, rpctypes.ErrGRPCRequestTooManyRequests},
	{engine.ErrRequestTooLarge, rpctypes.ErrGRPCRequestTooLarge},
	{engine.ErrNoLeader, rpctypes.ErrGRPCNoLeader},
	{engine.ErrNoSpace, rpctypes.ErrGRPCNoSpace},
	{engine.ErrTimeout, rpctypes.ErrGRPCTimeout},
	{engine.ErrMemberNotFound, rpctypes.ErrGRPCMemberNotFound},
	{engine.ErrMemberIDRemoved, rpctypes.ErrGRPCMemberNotFound},
	{engine.ErrMemberExists, rpctypes.ErrGRPCMemberExist},
	{engine.ErrPeerURLExists, rpctypes.ErrGRPCPeerURLExist},
	{engine.ErrMemberNotLearner, rpctypes.ErrGRPCMemberNotLearner},
	{engine.ErrTooManyLearners, rpctypes.ErrGRPCTooManyLearners},
	{engine.ErrLearnerNotReady, rpctypes.ErrGRPCLearnerNotReady},
	{engine.ErrLastVoter, rpctypes.ErrGRPCMemberNotEnoughStarted},
	{errStopped, rpctypes.ErrGRPCStopped},
	{context.Canceled, rpctypes.ErrGRPCCanceled},
	{context.DeadlineExceeded, rpctypes.ErrGRPCDeadlineExceeded},
}

// toGRPC turns an error from the core into the gRPC status etcd answers
// with; an error with no etcd equivalent passes through (codes.Unknown).
func toGRPC(err error) error {
	for _, e := range grpcErrors {
		if errors.Is(err, e.err) {
			return e.grpc
		}
	}
	return err
}
