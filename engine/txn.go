package engine

import (
	"bytes"
	"cmp"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/basaltdb/basalt/engine/mvcc"
)

// A txn runs in three steps, as in etcd: first every compare on the chosen
// path (nested txns included) is evaluated against the state before the
// txn, then the ops of that path are checked, and only if all checks pass
// are they executed in order, each seeing the writes of the ones before.
// A failing check fails the whole txn with no effect.

// txnPath records the branch taken by a txn and by each nested txn on that
// branch, in execution order: true is success.
type txnPath []bool

// compareToPath evaluates the compares of rt and of the nested txns on the
// branches taken.
func compareToPath(r rangeReader, rt *pb.TxnRequest) (txnPath, error) {
	var path txnPath
	var walk func(rt *pb.TxnRequest) error
	walk = func(rt *pb.TxnRequest) error {
		ok, err := compareAll(r, rt.Compare)
		if err != nil {
			return err
		}
		path = append(path, ok)
		for _, op := range branch(rt, ok) {
			if nested := op.GetRequestTxn(); nested != nil {
				if err := walk(nested); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return path, walk(rt)
}

func branch(rt *pb.TxnRequest, succeeded bool) []*pb.RequestOp {
	if succeeded {
		return rt.Success
	}
	return rt.Failure
}

func compareAll(r rangeReader, cs []*pb.Compare) (bool, error) {
	for _, c := range cs {
		ok, err := compare(r, c)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// compare evaluates one compare against every key in its range: all must
// satisfy it. With no key, a VALUE compare is false and the others compare
// against a zero KeyValue, so CREATE == 0 means "absent".
func compare(r rangeReader, c *pb.Compare) (bool, error) {
	res, err := r.Range(c.Key, c.RangeEnd, mvcc.RangeOptions{})
	if err != nil {
		return false, err
	}
	if len(res.KVs) == 0 {
		if c.Target == pb.Compare_VALUE {
			return false, nil
		}
		return compareKV(c, zeroKV), nil
	}
	for _, kv := range res.KVs {
		if !compareKV(c, kv) {
			return false, nil
		}
	}
	return true, nil
}

func compareKV(c *pb.Compare, kv *mvccpb.KeyValue) bool {
	var order int
	switch c.Target {
	case pb.Compare_VALUE:
		order = bytes.Compare(kv.Value, c.GetValue())
	case pb.Compare_VERSION:
		order = cmp.Compare(kv.Version, c.GetVersion())
	case pb.Compare_CREATE:
		order = cmp.Compare(kv.CreateRevision, c.GetCreateRevision())
	case pb.Compare_MOD:
		order = cmp.Compare(kv.ModRevision, c.GetModRevision())
	case pb.Compare_LEASE:
		order = cmp.Compare(kv.Lease, c.GetLease())
	}
	switch c.Result {
	case pb.Compare_EQUAL:
		return order == 0
	case pb.Compare_NOT_EQUAL:
		return order != 0
	case pb.Compare_GREATER:
		return order > 0
	case pb.Compare_LESS:
		return order < 0
	}
	// etcd counts a compare with an unknown result as satisfied.
	return true
}

// txnState is the state a txn is checked against before it runs: a write
// Txn before its first write, or a View for a read-only txn.
type txnState interface {
	rangeReader
	// FirstRev is the lowest revision a read may ask for.
	FirstRev() int64
}

// checkTxn checks every op on path against the state before the txn, whose
// revision is rev, and returns how much of path it consumed.
func checkTxn(t txnState, ls *lessor, rev int64, rt *pb.TxnRequest, path txnPath) (int, error) {
	used := 1
	for _, op := range branch(rt, path[0]) {
		switch v := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			if err := checkRange(t, rev, v.RequestRange); err != nil {
				return 0, err
			}
		case *pb.RequestOp_RequestPut:
			if err := checkPut(t, ls, v.RequestPut); err != nil {
				return 0, err
			}
		case *pb.RequestOp_RequestTxn:
			n, err := checkTxn(t, ls, rev, v.RequestTxn, path[used:])
			if err != nil {
				return 0, err
			}
			used += n
		}
	}
	return used, nil
}

// checkRange fails a txn's range at a revision the store cannot serve,
// with etcd's bounds: a revision below the first readable one fails even
// when negative (which, run alone, would read the current revision).
func checkRange(t txnState, rev int64, rr *pb.RangeRequest) error {
	switch {
	case rr.Revision == 0:
		return nil
	case rr.Revision > rev:
		return mvcc.ErrFutureRev
	case rr.Revision < t.FirstRev():
		return mvcc.ErrCompacted
	}
	return nil
}

// applyTxn runs a txn that may write.
func applyTxn(t *mvcc.Txn, ls *lessor, rt *pb.TxnRequest) (*pb.TxnResponse, error) {
	path, err := compareToPath(t, rt)
	if err != nil {
		return nil, err
	}
	if _, err := checkTxn(t, ls, t.Rev()-1, rt, path); err != nil {
		return nil, err
	}
	resp, _, err := execTxn(t, t, rt, path)
	if err != nil {
		return nil, err
	}
	resp.Header = &pb.ResponseHeader{Revision: t.Rev() - 1}
	if t.Changed() {
		resp.Header.Revision = t.Rev()
	}
	return resp, nil
}

// ReadTxn runs a txn that does not write (IsTxnReadOnly) against a read
// view, as a member serves it without going through raft.
func ReadTxn(v *mvcc.View, rt *pb.TxnRequest) (*pb.TxnResponse, error) {
	path, err := compareToPath(v, rt)
	if err != nil {
		return nil, err
	}
	// A read-only txn has no put, so it never asks for leases.
	if _, err := checkTxn(v, nil, v.Rev(), rt, path); err != nil {
		return nil, err
	}
	resp, _, err := execTxn(v, nil, rt, path)
	if err != nil {
		return nil, err
	}
	resp.Header = &pb.ResponseHeader{Revision: v.Rev()}
	return resp, nil
}

// execTxn executes the ops on path; t is nil for a read-only txn. Each
// sub-response's header carries only the revision, as etcd's do.
func execTxn(r rangeReader, t *mvcc.Txn, rt *pb.TxnRequest, path txnPath) (*pb.TxnResponse, int, error) {
	resp := &pb.TxnResponse{Succeeded: path[0]}
	used := 1
	for _, op := range branch(rt, path[0]) {
		var ro *pb.ResponseOp
		switch v := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			rr, err := Range(r, v.RequestRange)
			if err != nil {
				return nil, 0, err
			}
			ro = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: rr}}
		case *pb.RequestOp_RequestPut:
			ro = &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{ResponsePut: execPut(t, v.RequestPut)}}
		case *pb.RequestOp_RequestDeleteRange:
			ro = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: applyDeleteRange(t, v.RequestDeleteRange)}}
		case *pb.RequestOp_RequestTxn:
			nested, n, err := execTxn(r, t, v.RequestTxn, path[used:])
			if err != nil {
				return nil, 0, err
			}
			used += n
			nested.Header = &pb.ResponseHeader{}
			ro = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: nested}}
		}
		resp.Responses = append(resp.Responses, ro)
	}
	return resp, used, nil
}

// IsTxnReadOnly reports whether no branch of rt, nested txns included,
// writes.
func IsTxnReadOnly(rt *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{rt.Success, rt.Failure} {
		for _, op := range ops {
			switch v := op.Request.(type) {
			case *pb.RequestOp_RequestPut, *pb.RequestOp_RequestDeleteRange:
				return false
			case *pb.RequestOp_RequestTxn:
				if !IsTxnReadOnly(v.RequestTxn) {
					return false
				}
			}
		}
	}
	return true
}

// IsTxnSerializable reports whether every range of rt, nested txns
// included, is serializable, so a read-only rt needs no read barrier.
func IsTxnSerializable(rt *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{rt.Success, rt.Failure} {
		for _, op := range ops {
			switch v := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				if !v.RequestRange.Serializable {
					return false
				}
			case *pb.RequestOp_RequestTxn:
				if !IsTxnSerializable(v.RequestTxn) {
					return false
				}
			}
		}
	}
	return true
}
