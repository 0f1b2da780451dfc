package server

import (
	"errors"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

func opPut(k string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k)}}}
}

func opDel(k, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(k), RangeEnd: []byte(end)}}}
}

func opTxn(success, failure []*pb.RequestOp) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Success: success, Failure: failure}}}
}

// TestCheckTxnDuplicateKeys: etcd's duplicate-key rule, in each branch and
// through nested txns, including branches of a single op.
func TestCheckTxnDuplicateKeys(t *testing.T) {
	ops := func(o ...*pb.RequestOp) []*pb.RequestOp { return o }
	for _, tc := range []struct {
		name             string
		success, failure []*pb.RequestOp
		dup              bool
	}{
		{"one put", ops(opPut("a")), nil, false},
		{"one put in each branch", ops(opPut("a")), ops(opPut("a")), false},
		{"two puts", ops(opPut("a"), opPut("b")), nil, false},
		{"two puts on a key", ops(opPut("a"), opPut("a")), nil, true},
		{"two puts on a key in failure", nil, ops(opPut("b"), opPut("b")), true},
		{"put under a delete", ops(opDel("a", "c"), opPut("b")), nil, true},
		{"put beside a delete", ops(opDel("a", "c"), opPut("c")), nil, false},
		{"nested branches exclude each other", ops(opTxn(ops(opPut("a")), ops(opPut("a")))), nil, false},
		{"a lone nested txn with two puts on a key", ops(opTxn(ops(opPut("a"), opPut("a")), nil)), nil, true},
		{"nested put on an outer put", ops(opPut("a"), opTxn(nil, ops(opPut("a")))), nil, true},
	} {
		err := checkTxn(&pb.TxnRequest{Success: tc.success, Failure: tc.failure}, 128)
		if got := errors.Is(err, rpctypes.ErrGRPCDuplicateKey); got != tc.dup || (!tc.dup && err != nil) {
			t.Errorf("%s: checkTxn = %v, want duplicate %v", tc.name, err, tc.dup)
		}
	}
}
