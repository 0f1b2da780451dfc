package engine

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"
)

// ErrNoSpace is returned for a write that would take the store past its
// quota, and for every write that adds data while a NOSPACE alarm is
// raised.
var ErrNoSpace = errors.New("engine: database space exceeded")

// Quota costs, etcd's: what a put or a lease is taken to add to the store
// when deciding whether it fits.
const (
	kvOverheadBytes    = 256
	leaseOverheadBytes = 64
)

// alarms are the raised alarms of the cluster, ordered by member then type.
// A published slice is never modified: a change makes a new one.
type alarms []*pb.AlarmMember

func alarmLess(a, b *pb.AlarmMember) int {
	if c := cmp.Compare(a.MemberID, b.MemberID); c != 0 {
		return c
	}
	return cmp.Compare(a.Alarm, b.Alarm)
}

// raised reports whether any member has raised alarm t.
func (as alarms) raised(t pb.AlarmType) bool {
	return slices.ContainsFunc(as, func(a *pb.AlarmMember) bool { return a.Alarm == t })
}

// applyAlarm applies an AlarmRequest as etcd does: ACTIVATE and
// DEACTIVATE answer the alarm they changed (nothing if none changed), GET
// answers the alarms of the type asked, every alarm for NONE.
func (n *Node) applyAlarm(r *pb.AlarmRequest) *pb.AlarmResponse {
	resp := &pb.AlarmResponse{Header: &pb.ResponseHeader{Revision: n.store.Rev()}}
	m := &pb.AlarmMember{MemberID: r.MemberID, Alarm: r.Alarm}
	i, found := slices.BinarySearchFunc(n.alarms, m, alarmLess)
	switch r.Action {
	case pb.AlarmRequest_GET:
		for _, a := range n.alarms {
			if r.Alarm == pb.AlarmType_NONE || a.Alarm == r.Alarm {
				resp.Alarms = append(resp.Alarms, a)
			}
		}
	case pb.AlarmRequest_ACTIVATE:
		if r.Alarm == pb.AlarmType_NONE || found {
			break
		}
		n.alarms = slices.Insert(slices.Clone(n.alarms), i, m)
		resp.Alarms = []*pb.AlarmMember{m}
		n.log.Warn("alarm raised", zap.String("member", fmt.Sprintf("%x", r.MemberID)), zap.Stringer("alarm", r.Alarm))
	case pb.AlarmRequest_DEACTIVATE:
		if !found {
			break
		}
		n.alarms = slices.Delete(slices.Clone(n.alarms), i, i+1)
		resp.Alarms = []*pb.AlarmMember{m}
		n.log.Info("alarm cleared", zap.String("member", fmt.Sprintf("%x", r.MemberID)), zap.Stringer("alarm", r.Alarm))
	}
	return resp
}

// QuotaCost is what op is taken to add to the store, as etcd counts it: a
// put's key and value with an overhead, a txn's costlier branch (nested
// txns included), a lease's overhead; 0 for what adds nothing.
func QuotaCost(op *pb.InternalRaftRequest) int64 {
	switch {
	case op.Put != nil:
		return putCost(op.Put)
	case op.Txn != nil:
		return txnCost(op.Txn)
	case op.LeaseGrant != nil:
		return leaseOverheadBytes
	}
	return 0
}

func putCost(p *pb.PutRequest) int64 { return kvOverheadBytes + int64(len(p.Key)+len(p.Value)) }

func txnCost(rt *pb.TxnRequest) int64 {
	branch := func(ops []*pb.RequestOp) (c int64) {
		for _, op := range ops {
			switch v := op.Request.(type) {
			case *pb.RequestOp_RequestPut:
				c += putCost(v.RequestPut)
			case *pb.RequestOp_RequestTxn:
				c += txnCost(v.RequestTxn)
			}
		}
		return c
	}
	return max(branch(rt.Success), branch(rt.Failure))
}

// writeAlarms writes the alarms section's payload: a count, then each
// alarm's member (u64) and type (u32).
func writeAlarms(w io.Writer, as alarms) error {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(as)))
	for _, a := range as {
		b = binary.LittleEndian.AppendUint64(b, a.MemberID)
		b = binary.LittleEndian.AppendUint32(b, uint32(a.Alarm))
	}
	_, err := w.Write(b)
	return err
}

func readAlarms(r io.Reader) (alarms, error) {
	var b [12]byte
	if err := readFull(r, b[:4], "alarm count"); err != nil {
		return nil, err
	}
	count := binary.LittleEndian.Uint32(b[:4])
	if count > alarmsMax {
		return nil, snapCorrupt("%d alarms, at most %d", count, alarmsMax)
	}
	as := make(alarms, 0, count)
	for range count {
		if err := readFull(r, b[:], "alarm"); err != nil {
			return nil, err
		}
		a := &pb.AlarmMember{MemberID: binary.LittleEndian.Uint64(b[:8]), Alarm: pb.AlarmType(binary.LittleEndian.Uint32(b[8:]))}
		if _, known := pb.AlarmType_name[int32(a.Alarm)]; !known || a.Alarm == pb.AlarmType_NONE {
			return nil, snapCorrupt("alarm of type %d", a.Alarm)
		}
		if k := len(as); k > 0 && alarmLess(as[k-1], a) >= 0 {
			return nil, snapCorrupt("alarms out of order")
		}
		as = append(as, a)
	}
	return as, nil
}
