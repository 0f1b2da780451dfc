package engine

import (
	"errors"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/basaltdb/basalt/engine/mvcc"
)

func txnRangeOp(key string, rev int64) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(key), Revision: rev}}}
}

func txnPutOp(key, value string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte(value)}}}
}

// runTxn applies rt in one store transaction, as the apply loop does.
func runTxn(s *mvcc.Store, rt *pb.TxnRequest) (*pb.TxnResponse, error) {
	t := s.Begin()
	defer t.End()
	return applyTxn(t, nil, rt)
}

// TestTxnRangeRevisionChecks pins etcd v3.7.3's bounds on the revision of a
// range inside a txn, checked before anything runs: a negative revision
// passes until the first compaction and fails after it.
func TestTxnRangeRevisionChecks(t *testing.T) {
	s := mvcc.New()
	negative := &pb.TxnRequest{Success: []*pb.RequestOp{txnRangeOp("a", -1), txnPutOp("b", "1")}}
	resp, err := runTxn(s, negative)
	if err != nil || resp.Header.Revision != 2 {
		t.Fatalf("negative revision before any compaction: got %v, %v; want it to read the current revision and write at 2", resp, err)
	}
	if _, err := runTxn(s, &pb.TxnRequest{Success: []*pb.RequestOp{txnRangeOp("a", 3), txnPutOp("b", "2")}}); !errors.Is(err, mvcc.ErrFutureRev) {
		t.Fatalf("future revision: got %v, want %v", err, mvcc.ErrFutureRev)
	}
	if err := s.Compact(1); err != nil {
		t.Fatal(err)
	}
	if _, err := runTxn(s, negative); !errors.Is(err, mvcc.ErrCompacted) {
		t.Fatalf("negative revision after a compaction: got %v, want %v", err, mvcc.ErrCompacted)
	}
	if s.Rev() != 2 {
		t.Fatalf("failed txns changed the store: revision %d, want 2", s.Rev())
	}
	// A read-only txn is checked the same way.
	if _, err := ReadTxn(s.View(), &pb.TxnRequest{Success: []*pb.RequestOp{txnRangeOp("b", -1)}}); !errors.Is(err, mvcc.ErrCompacted) {
		t.Fatalf("read-only txn with revision -1 after a compaction: got %v, want %v", err, mvcc.ErrCompacted)
	}
}

// TestCompareUnknownResult pins etcd's answer to a compare whose result is
// none of the four it knows: satisfied.
func TestCompareUnknownResult(t *testing.T) {
	s := mvcc.New()
	resp, err := ReadTxn(s.View(), &pb.TxnRequest{
		Compare: []*pb.Compare{{Key: []byte("k"), Target: pb.Compare_VERSION, Result: pb.Compare_CompareResult(7)}},
		Success: []*pb.RequestOp{txnRangeOp("k", 0)},
	})
	if err != nil || !resp.Succeeded {
		t.Fatalf("got %v, %v; want the success branch", resp, err)
	}
}
