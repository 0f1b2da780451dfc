package server

import (
	"bytes"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Checks done at the door, before a request reaches raft, with etcd's
// errors in etcd's order.

func checkRange(r *pb.RangeRequest) error {
	if len(r.Key) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if _, ok := pb.RangeRequest_SortOrder_name[int32(r.SortOrder)]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	if _, ok := pb.RangeRequest_SortTarget_name[int32(r.SortTarget)]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	return nil
}

func checkPut(r *pb.PutRequest) error {
	switch {
	case len(r.Key) == 0:
		return rpctypes.ErrGRPCEmptyKey
	case r.IgnoreValue && len(r.Value) != 0:
		return rpctypes.ErrGRPCValueProvided
	case r.IgnoreLease && r.Lease != 0:
		return rpctypes.ErrGRPCLeaseProvided
	}
	return nil
}

func checkDeleteRange(r *pb.DeleteRangeRequest) error {
	if len(r.Key) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	return nil
}

// checkTxn checks a txn's size, its compares and every op, then the
// duplicate-key rule of each branch.
func checkTxn(r *pb.TxnRequest, opsMax int) error {
	if err := checkTxnOps(r, opsMax); err != nil {
		return err
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		// A branch of one op, not a txn, has nothing its key could collide
		// with: the common txn (compares and one put) skips the
		// allocations of checkIntervals.
		if len(ops) == 0 || (len(ops) == 1 && ops[0].GetRequestTxn() == nil) {
			continue
		}
		if _, _, err := checkIntervals(ops); err != nil {
			return err
		}
	}
	return nil
}

func checkTxnOps(r *pb.TxnRequest, opsMax int) error {
	opc := max(len(r.Compare), len(r.Success), len(r.Failure))
	if opc > opsMax {
		return rpctypes.ErrGRPCTooManyOps
	}
	for _, c := range r.Compare {
		if len(c.Key) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			if err := checkRequestOp(op, opsMax-opc); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkRequestOp(op *pb.RequestOp, opsMax int) error {
	switch v := op.Request.(type) {
	case *pb.RequestOp_RequestRange:
		return checkRange(v.RequestRange)
	case *pb.RequestOp_RequestPut:
		return checkPut(v.RequestPut)
	case *pb.RequestOp_RequestDeleteRange:
		return checkDeleteRange(v.RequestDeleteRange)
	case *pb.RequestOp_RequestTxn:
		return checkTxnOps(v.RequestTxn, opsMax)
	}
	return rpctypes.ErrGRPCKeyNotFound
}

// interval is a key range [lo, hi); hi nil means unbounded.
type interval struct{ lo, hi []byte }

func (iv interval) contains(key []byte) bool {
	return bytes.Compare(key, iv.lo) >= 0 && (iv.hi == nil || bytes.Compare(key, iv.hi) < 0)
}

func deleteInterval(d *pb.DeleteRangeRequest) interval {
	switch {
	case len(d.RangeEnd) == 0:
		return interval{lo: d.Key, hi: append(append([]byte(nil), d.Key...), 0)}
	case bytes.Equal(d.RangeEnd, []byte{0}):
		return interval{lo: d.Key}
	}
	return interval{lo: d.Key, hi: d.RangeEnd}
}

func deleted(dels []interval, key []byte) bool {
	for _, iv := range dels {
		if iv.contains(key) {
			return true
		}
	}
	return false
}

// checkIntervals enforces etcd's duplicate-key rule on one branch: no two
// puts on one key and no put on a key a delete of the branch covers,
// nested txns included; the two branches of a nested txn exclude each
// other, so they may put the same key. It returns the branch's puts and
// deletes for the enclosing level.
func checkIntervals(ops []*pb.RequestOp) (map[string]struct{}, []interval, error) {
	var dels []interval
	for _, op := range ops {
		if d := op.GetRequestDeleteRange(); d != nil {
			dels = append(dels, deleteInterval(d))
		}
	}
	puts := map[string]struct{}{}
	for _, op := range ops {
		nested := op.GetRequestTxn()
		if nested == nil {
			continue
		}
		putsThen, delsThen, err := checkIntervals(nested.Success)
		if err != nil {
			return nil, nil, err
		}
		putsElse, delsElse, err := checkIntervals(nested.Failure)
		if err != nil {
			return nil, nil, err
		}
		for k := range putsThen {
			if _, dup := puts[k]; dup || deleted(dels, []byte(k)) {
				return nil, nil, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = struct{}{}
		}
		for k := range putsElse {
			_, dup := puts[k]
			_, fromThen := putsThen[k]
			if (dup && !fromThen) || deleted(dels, []byte(k)) {
				return nil, nil, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = struct{}{}
		}
		dels = append(dels, delsThen...)
		dels = append(dels, delsElse...)
	}
	for _, op := range ops {
		p := op.GetRequestPut()
		if p == nil {
			continue
		}
		k := string(p.Key)
		if _, dup := puts[k]; dup || deleted(dels, p.Key) {
			return nil, nil, rpctypes.ErrGRPCDuplicateKey
		}
		puts[k] = struct{}{}
	}
	return puts, dels, nil
}
