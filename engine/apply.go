package engine

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/engine/mvcc"
)

// Errors an applied request can fail with. Apply is a pure function of the
// log, so every member fails the same request with the same error.
var (
	ErrLeaseNotFound = errors.New("engine: requested lease not found")
	ErrKeyNotFound   = errors.New("engine: key not found")
)

// apply applies one committed entry.
func (n *Node) apply(ent *raftpb.Entry) {
	assert(ent.GetIndex() == n.applied+1, "engine: member %x applies entry %d after %d", n.cfg.ID, ent.GetIndex(), n.applied)
	n.applied, n.appliedTerm = ent.GetIndex(), ent.GetTerm()
	n.snap.logBytes += int64(len(ent.GetData()))
	switch ent.GetType() {
	case raftpb.EntryNormal:
		if len(ent.GetData()) == 0 {
			n.maybePromote(ent.GetTerm()) // a new leader's empty entry
			return
		}
		req := n.ownProposal(ent.GetData())
		if req == nil {
			req = &pb.InternalRaftRequest{}
			if err := proto.Unmarshal(ent.GetData(), req); err != nil {
				panic(fmt.Sprintf("engine: member %x cannot decode committed entry %d: %v", n.cfg.ID, ent.GetIndex(), err))
			}
		}
		res, err := n.applyRequest(req)
		r := Response{ID: ID(req.GetHeader().GetID()), Result: res, Err: err}
		if req.GetCompaction().GetPhysical() && err == nil {
			if _, ok := n.pending[r.ID]; ok {
				n.physicalWaiters = append(n.physicalWaiters, r)
			}
			return
		}
		n.answer(r)
	case raftpb.EntryConfChange:
		var cc raftpb.ConfChange
		if err := proto.Unmarshal(ent.GetData(), &cc); err != nil {
			panic(fmt.Sprintf("engine: member %x cannot decode conf change %d: %v", n.cfg.ID, ent.GetIndex(), err))
		}
		res, err := n.applyConfChange(&cc)
		n.confState = n.raw.ApplyConfChange(&cc)
		n.answer(Response{ID: ID(cc.GetId()), Result: res, Err: err})
	case raftpb.EntryConfChangeV2:
		var cc raftpb.ConfChangeV2
		if err := proto.Unmarshal(ent.GetData(), &cc); err != nil {
			panic(fmt.Sprintf("engine: member %x cannot decode conf change %d: %v", n.cfg.ID, ent.GetIndex(), err))
		}
		n.confState = n.raw.ApplyConfChange(&cc)
	}
}

// ownProposal returns the request this member proposed as data, or nil
// if data is not one of its pending proposals. Applying it is applying
// data: data is its encoding, and decoding data gives a message equal to
// it (proto.Equal), which apply reads through the same fields and lengths
// (it never tells a nil byte slice from an empty one). This saves
// decoding what the member has just encoded.
func (n *Node) ownProposal(data []byte) *pb.InternalRaftRequest {
	if len(n.proposed) == 0 {
		return nil
	}
	id, ok := entryID(data)
	if !ok {
		return nil
	}
	p, ok := n.proposed[id]
	if !ok || !bytes.Equal(p.data, data) {
		return nil
	}
	delete(n.proposed, id)
	return p.op
}

// headerField is the field number of InternalRaftRequest.header and
// requestIDField that of RequestHeader.ID.
var (
	headerField    = (&pb.InternalRaftRequest{}).ProtoReflect().Descriptor().Fields().ByName("header").Number()
	requestIDField = (&pb.RequestHeader{}).ProtoReflect().Descriptor().Fields().ByName("ID").Number()
)

// entryID returns the request ID in an encoded InternalRaftRequest
// without decoding the rest of it; ok is false when it has none.
func entryID(data []byte) (id ID, ok bool) {
	hdr, ok := findField(data, headerField, protowire.BytesType)
	if !ok {
		return 0, false
	}
	v, ok := findField(hdr, requestIDField, protowire.VarintType)
	if !ok {
		return 0, false
	}
	x, n := protowire.ConsumeVarint(v)
	return ID(x), n > 0
}

// findField returns the value of the last field num of type typ in the
// encoded message b (the last one wins, as when decoding): for a bytes
// field its content, for a varint its encoding.
func findField(b []byte, num protowire.Number, typ protowire.Type) (val []byte, found bool) {
	for len(b) > 0 {
		n, t, k := protowire.ConsumeTag(b)
		if k < 0 {
			return nil, false
		}
		b = b[k:]
		k = protowire.ConsumeFieldValue(n, t, b)
		if k < 0 {
			return nil, false
		}
		if n == num && t == typ {
			val, found = b[:k], true
			if typ == protowire.BytesType {
				val, _ = protowire.ConsumeBytes(b[:k])
			}
		}
		b = b[k:]
	}
	return val, found
}

// applyRequest applies one decoded request to the store.
func (n *Node) applyRequest(req *pb.InternalRaftRequest) (proto.Message, error) {
	if req.Alarm != nil {
		return n.applyAlarm(req.Alarm), nil
	}
	if req.ClusterMemberAttrSet != nil {
		return n.applyMemberAttrs(req.ClusterMemberAttrSet), nil
	}
	if isAuthRequest(req) {
		return n.applyAuth(req)
	}
	if err := n.checkAuthRevision(req.GetHeader()); err != nil {
		return nil, err
	}
	cost := QuotaCost(req)
	if cost > 0 && n.alarms.raised(pb.AlarmType_NOSPACE) {
		return nil, ErrNoSpace
	}
	fits := cost == 0 || n.cfg.QuotaBytes <= 0 || n.bytes()+cost < n.cfg.QuotaBytes
	res, err := n.applyKV(req)
	// As etcd does, a write that does not fit the quota is applied all the
	// same and answers ErrNoSpace; the check at the door keeps this rare.
	if err == nil && !fits {
		return nil, ErrNoSpace
	}
	return res, err
}

func (n *Node) applyKV(req *pb.InternalRaftRequest) (proto.Message, error) {
	switch {
	case req.Put != nil:
		return n.write(func(t *mvcc.Txn) (proto.Message, error) { return applyPut(t, n.leases, req.Put) })
	case req.DeleteRange != nil:
		return n.write(func(t *mvcc.Txn) (proto.Message, error) { return applyDeleteRange(t, req.DeleteRange), nil })
	case req.Txn != nil:
		return n.write(func(t *mvcc.Txn) (proto.Message, error) { return applyTxn(t, n.leases, req.Txn) })
	case req.LeaseGrant != nil:
		return n.applyLeaseGrant(req.LeaseGrant)
	case req.LeaseRevoke != nil:
		return n.applyLeaseRevoke(req.LeaseRevoke)
	case req.LeaseCheckpoint != nil:
		return n.applyLeaseCheckpoint(req.LeaseCheckpoint), nil
	case req.Compaction != nil:
		before := n.store.View()
		if err := n.store.Compact(req.Compaction.Revision); err != nil {
			return nil, err
		}
		if len(n.compactions) == compactionsHeldMax {
			n.compactions = slices.Delete(n.compactions, 0, 1)
		}
		n.compactions = append(n.compactions, Compaction{Rev: req.Compaction.Revision, Before: before})
		n.viewStale = true
		return &pb.CompactionResponse{Header: &pb.ResponseHeader{Revision: n.store.Rev()}}, nil
	}
	return nil, ErrUnknownRequest
}

// write runs fn in one store transaction; the whole request gets one
// revision, or none if it changed nothing.
func (n *Node) write(fn func(*mvcc.Txn) (proto.Message, error)) (proto.Message, error) {
	t := n.store.Begin()
	res, err := fn(t)
	if events := t.End(); len(events) > 0 {
		n.viewStale = true
		n.leases.track(events)
	}
	return res, err
}

// checkPut fails a put that cannot apply: a missing lease, or ignore_value
// or ignore_lease on a key that does not exist.
func checkPut(r rangeReader, ls *lessor, p *pb.PutRequest) error {
	if p.Lease != 0 && ls.leases[p.Lease] == nil {
		return ErrLeaseNotFound
	}
	if p.IgnoreValue || p.IgnoreLease {
		res, err := r.Range(p.Key, nil, mvcc.RangeOptions{CountOnly: true})
		if err != nil {
			return err
		}
		if res.Count == 0 {
			return ErrKeyNotFound
		}
	}
	return nil
}

func applyPut(t *mvcc.Txn, ls *lessor, p *pb.PutRequest) (*pb.PutResponse, error) {
	if err := checkPut(t, ls, p); err != nil {
		return nil, err
	}
	return execPut(t, p), nil
}

// execPut applies a checked put.
func execPut(t *mvcc.Txn, p *pb.PutRequest) *pb.PutResponse {
	value, lease := p.Value, p.Lease
	if p.IgnoreValue || p.IgnoreLease {
		res, err := t.Range(p.Key, nil, mvcc.RangeOptions{})
		assert(err == nil && len(res.KVs) == 1, "engine: checked put on %q lost its key: %v", p.Key, err)
		if p.IgnoreValue {
			value = res.KVs[0].Value
		}
		if p.IgnoreLease {
			lease = res.KVs[0].Lease
		}
	}
	prev := t.Put(p.Key, value, lease, p.PrevKv)
	return &pb.PutResponse{Header: &pb.ResponseHeader{Revision: t.Rev()}, PrevKv: prev}
}

func applyDeleteRange(t *mvcc.Txn, d *pb.DeleteRangeRequest) *pb.DeleteRangeResponse {
	deleted := t.DeleteRange(d.Key, d.RangeEnd)
	rev := t.Rev() - 1
	if len(deleted) > 0 || t.Changed() {
		rev = t.Rev()
	}
	resp := &pb.DeleteRangeResponse{Header: &pb.ResponseHeader{Revision: rev}, Deleted: int64(len(deleted))}
	if d.PrevKv {
		resp.PrevKvs = deleted
	}
	return resp
}

// rangeReader is what a range reads from: a View, or a write Txn that sees
// its own earlier writes.
type rangeReader interface {
	Range(key, end []byte, opts mvcc.RangeOptions) (mvcc.RangeResult, error)
}

// Range serves a RangeRequest from r; header.revision is r's current
// revision.
func Range(r rangeReader, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	res, err := r.Range(req.Key, req.RangeEnd, mvcc.RangeOptions{
		Rev:          req.Revision,
		Limit:        req.Limit,
		CountOnly:    req.CountOnly,
		KeysOnly:     req.KeysOnly,
		SortOrder:    mvcc.SortOrder(req.SortOrder),
		SortTarget:   mvcc.SortTarget(req.SortTarget),
		MinModRev:    req.MinModRevision,
		MaxModRev:    req.MaxModRevision,
		MinCreateRev: req.MinCreateRevision,
		MaxCreateRev: req.MaxCreateRevision,
	})
	if err != nil {
		return nil, err
	}
	if req.KeysOnly && req.SortTarget != pb.RangeRequest_VALUE {
		// etcd 3.7 answers these from its index, which holds no lease; to
		// sort by value it reads the values, and their leases with them.
		for _, kv := range res.KVs {
			kv.Lease = 0
		}
	}
	return &pb.RangeResponse{
		Header: &pb.ResponseHeader{Revision: res.Rev},
		Kvs:    res.KVs,
		More:   res.More,
		Count:  res.Count,
	}, nil
}

// zeroKV is what a compare on a range with no keys compares against.
var zeroKV = &mvccpb.KeyValue{}
