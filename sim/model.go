package sim

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// model is the reference for the log-order oracle: a plain, slow,
// obviously-correct store with etcd v3.7.3's KV semantics, written apart
// from engine/mvcc. Replaying the committed requests through it in log
// order gives the answer every acknowledged request must have had.
type model struct {
	// rev is the current revision; a new store is at 1.
	rev int64
	// compactRev is the compaction revision.
	compactRev int64
	// keys holds every key ever written, sorted.
	keys []string
	// hist holds each key's versions, oldest first, tombstones included.
	hist map[string][]modelVersion
	// leases are the granted leases by ID. A key is attached to the lease
	// its live version names; the engine refuses a put to a lease that does
	// not exist, so every such lease is in leases.
	leases map[int64]*modelLease
}

// modelLease is one granted lease.
type modelLease struct {
	// ttl is the granted TTL in seconds, raised to the engine's minimum.
	ttl int64
	// remaining is the remaining TTL the leader last checkpointed; 0 when
	// unset (a renewal clears it).
	remaining int64
}

// modelVersion is one put or tombstone (ver == 0) of a key.
type modelVersion struct {
	main, sub   int64
	value       []byte
	create, ver int64
	lease       int64
}

// Errors of the model; an engine error matches one of these classes.
var (
	errModelCompacted = errors.New("compacted")
	errModelFuture    = errors.New("future revision")
	errModelLease     = errors.New("lease not found")
	errModelUnknown   = errors.New("unknown request")
	errModelExist     = errors.New("lease already exists")
	errModelTTL       = errors.New("too large lease TTL")
)

// leaseTTLMin is the smallest TTL the engine grants, in seconds: one and
// a half election timeouts, rounded up to a second (etcd's minTTL).
const leaseTTLMin = (3*electionTicks*int64(tickInterval)/2 + int64(time.Second) - 1) / int64(time.Second)

// leaseTTLMax is the largest TTL a grant may ask for (etcd's MaxLeaseTTL).
const leaseTTLMax = 9_000_000_000

func newModel() *model {
	return &model{rev: 1, hist: map[string][]modelVersion{}, leases: map[int64]*modelLease{}}
}

// at returns the newest version of key with main revision <= rev, or nil.
func (m *model) at(key string, rev int64) *modelVersion {
	vs := m.hist[key]
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].main <= rev {
			return &vs[i]
		}
	}
	return nil
}

// live returns the version of key readable at rev, nil if none.
func (m *model) live(key string, rev int64) *modelVersion {
	v := m.at(key, rev)
	if v == nil || v.ver == 0 {
		return nil
	}
	return v
}

// keysIn returns the known keys in [key, end) with etcd's range forms.
func (m *model) keysIn(key, end []byte) []string {
	if len(end) == 0 {
		if _, ok := m.hist[string(key)]; ok {
			return []string{string(key)}
		}
		return nil
	}
	lo := sort.SearchStrings(m.keys, string(key))
	var out []string
	for _, k := range m.keys[lo:] {
		if !(len(end) == 1 && end[0] == 0) && k >= string(end) {
			break
		}
		out = append(out, k)
	}
	return out
}

// rangeAt serves r as a member whose store is at revision cur would.
func (m *model) rangeAt(r *pb.RangeRequest, cur int64, compactRev int64) (*pb.RangeResponse, error) {
	rev := r.Revision
	if rev > cur {
		return nil, errModelFuture
	}
	if rev <= 0 {
		rev = cur
	}
	if rev < compactRev {
		return nil, errModelCompacted
	}
	resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: cur}}
	for _, k := range m.keysIn(r.Key, r.RangeEnd) {
		v := m.live(k, rev)
		if v == nil {
			continue
		}
		resp.Count++
		if r.Limit > 0 && int64(len(resp.Kvs)) >= r.Limit {
			resp.More = true
			continue
		}
		resp.Kvs = append(resp.Kvs, v.kv(k))
	}
	if r.CountOnly {
		resp.Kvs, resp.More = nil, false
	}
	return resp, nil
}

func (v *modelVersion) kv(key string) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{Key: []byte(key), Value: v.value, CreateRevision: v.create, ModRevision: v.main, Version: v.ver, Lease: v.lease}
}

// apply applies one committed request and returns its response.
func (m *model) apply(req *pb.InternalRaftRequest) (proto.Message, error) {
	switch {
	case req.Put != nil:
		t := m.begin()
		if req.Put.Lease != 0 && m.leases[req.Put.Lease] == nil {
			return nil, errModelLease
		}
		res := t.put(req.Put)
		t.end()
		return res, nil
	case req.DeleteRange != nil:
		t := m.begin()
		res := t.deleteRange(req.DeleteRange)
		t.end()
		return res, nil
	case req.Txn != nil:
		t := m.begin()
		res, err := t.txn(req.Txn)
		t.end()
		return res, err
	case req.Compaction != nil:
		rev := req.Compaction.Revision
		if rev <= m.compactRev {
			return nil, errModelCompacted
		}
		if rev > m.rev {
			return nil, errModelFuture
		}
		m.compactRev = rev
		return &pb.CompactionResponse{Header: &pb.ResponseHeader{Revision: m.rev}}, nil
	case req.LeaseGrant != nil:
		return m.grant(req.LeaseGrant)
	case req.LeaseRevoke != nil:
		return m.revoke(req.LeaseRevoke.ID)
	case req.LeaseCheckpoint != nil:
		for _, cp := range req.LeaseCheckpoint.Checkpoints {
			if l := m.leases[cp.ID]; l != nil {
				l.remaining = cp.Remaining_TTL
			}
		}
		return &pb.LeaseCheckpointResponse{Header: &pb.ResponseHeader{Revision: m.rev}}, nil
	}
	return nil, errModelUnknown
}

// grant adds a lease as etcd's lessor does: ID 0 is not found (the
// server picks an ID before it proposes), a taken ID exists, a TTL below
// the minimum is raised to it. Granting writes nothing to the store.
func (m *model) grant(g *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	switch {
	case g.ID == 0:
		return nil, errModelLease
	case g.TTL > leaseTTLMax:
		return nil, errModelTTL
	case m.leases[g.ID] != nil:
		return nil, errModelExist
	}
	ttl := max(g.TTL, leaseTTLMin)
	m.leases[g.ID] = &modelLease{ttl: ttl}
	return &pb.LeaseGrantResponse{Header: &pb.ResponseHeader{Revision: m.rev}, ID: g.ID, TTL: ttl}, nil
}

// revoke deletes the lease and every key attached to it, all in one
// revision (none if no key is attached).
func (m *model) revoke(id int64) (*pb.LeaseRevokeResponse, error) {
	if m.leases[id] == nil {
		return nil, errModelLease
	}
	t := m.begin()
	for _, k := range m.attached(id, m.rev) {
		t.write(k, modelVersion{})
	}
	t.end()
	delete(m.leases, id)
	return &pb.LeaseRevokeResponse{Header: &pb.ResponseHeader{Revision: m.rev}}, nil
}

// leaseIDs returns the IDs of the granted leases, ascending.
func (m *model) leaseIDs() []int64 {
	ids := make([]int64, 0, len(m.leases))
	for id := range m.leases {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// attached returns the keys attached to lease id at revision rev, sorted.
func (m *model) attached(id int64, rev int64) []string {
	var keys []string
	for _, k := range m.keys {
		if v := m.live(k, rev); v != nil && v.lease == id {
			keys = append(keys, k)
		}
	}
	return keys
}

// modelTxn is one write transaction: its changes get main revision
// m.rev+1.
type modelTxn struct {
	m       *model
	changes int64
}

func (m *model) begin() *modelTxn { return &modelTxn{m: m} }

// cur is the revision the txn's reads see.
func (t *modelTxn) cur() int64 {
	if t.changes > 0 {
		return t.m.rev + 1
	}
	return t.m.rev
}

func (t *modelTxn) end() {
	if t.changes > 0 {
		t.m.rev++
	}
}

func (t *modelTxn) write(key string, v modelVersion) {
	m := t.m
	if _, ok := m.hist[key]; !ok {
		i := sort.SearchStrings(m.keys, key)
		m.keys = slices.Insert(m.keys, i, key)
	}
	v.main, v.sub = m.rev+1, t.changes
	m.hist[key] = append(m.hist[key], v)
	t.changes++
}

func (t *modelTxn) put(p *pb.PutRequest) *pb.PutResponse {
	key := string(p.Key)
	prev := t.m.live(key, t.cur())
	resp := &pb.PutResponse{Header: &pb.ResponseHeader{Revision: t.m.rev + 1}}
	nv := modelVersion{value: slices.Clone(p.Value), lease: p.Lease, create: t.m.rev + 1, ver: 1}
	if prev != nil {
		nv.create, nv.ver = prev.create, prev.ver+1
		if p.PrevKv {
			resp.PrevKv = prev.kv(key)
		}
	}
	t.write(key, nv)
	return resp
}

func (t *modelTxn) deleteRange(d *pb.DeleteRangeRequest) *pb.DeleteRangeResponse {
	resp := &pb.DeleteRangeResponse{}
	cur := t.cur()
	var doomed []string
	for _, k := range t.m.keysIn(d.Key, d.RangeEnd) {
		if t.m.live(k, cur) != nil {
			doomed = append(doomed, k)
		}
	}
	for _, k := range doomed {
		if d.PrevKv {
			resp.PrevKvs = append(resp.PrevKvs, t.m.live(k, cur).kv(k))
		}
		t.write(k, modelVersion{})
	}
	resp.Deleted = int64(len(doomed))
	resp.Header = &pb.ResponseHeader{Revision: t.cur()}
	return resp
}

func (t *modelTxn) txn(rt *pb.TxnRequest) (*pb.TxnResponse, error) {
	ok := true
	for _, c := range rt.Compare {
		ok = ok && t.compare(c)
	}
	ops := rt.Failure
	if ok {
		ops = rt.Success
	}
	// Every op is checked against the state before the txn; a failing
	// check fails the whole txn.
	for _, op := range ops {
		switch v := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			if _, err := t.m.rangeAt(v.RequestRange, t.cur(), t.m.compactRev); err != nil {
				return nil, err
			}
		case *pb.RequestOp_RequestPut:
			if l := v.RequestPut.Lease; l != 0 && t.m.leases[l] == nil {
				return nil, errModelLease
			}
		case *pb.RequestOp_RequestTxn:
			return nil, errModelUnknown
		}
	}
	resp := &pb.TxnResponse{Succeeded: ok}
	for _, op := range ops {
		var ro *pb.ResponseOp
		switch v := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			rr, err := t.m.rangeAt(v.RequestRange, t.cur(), t.m.compactRev)
			if err != nil {
				return nil, err
			}
			ro = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: rr}}
		case *pb.RequestOp_RequestPut:
			ro = &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{ResponsePut: t.put(v.RequestPut)}}
		case *pb.RequestOp_RequestDeleteRange:
			ro = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: t.deleteRange(v.RequestDeleteRange)}}
		}
		resp.Responses = append(resp.Responses, ro)
	}
	resp.Header = &pb.ResponseHeader{Revision: t.cur()}
	return resp, nil
}

// compare evaluates c against the state before the txn: every key in its
// range must satisfy it; with no key, a VALUE compare fails and the others
// compare against zeros.
func (t *modelTxn) compare(c *pb.Compare) bool {
	var vs []*modelVersion
	for _, k := range t.m.keysIn(c.Key, c.RangeEnd) {
		if v := t.m.live(k, t.m.rev); v != nil {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		if c.Target == pb.Compare_VALUE {
			return false
		}
		vs = []*modelVersion{{}}
	}
	for _, v := range vs {
		var order int
		switch c.Target {
		case pb.Compare_VALUE:
			order = strings.Compare(string(v.value), string(c.GetValue()))
		case pb.Compare_VERSION:
			order = cmp.Compare(v.ver, c.GetVersion())
		case pb.Compare_CREATE:
			order = cmp.Compare(v.create, c.GetCreateRevision())
		case pb.Compare_MOD:
			order = cmp.Compare(v.main, c.GetModRevision())
		case pb.Compare_LEASE:
			order = cmp.Compare(v.lease, c.GetLease())
		}
		var ok bool
		switch c.Result {
		case pb.Compare_EQUAL:
			ok = order == 0
		case pb.Compare_NOT_EQUAL:
			ok = order != 0
		case pb.Compare_GREATER:
			ok = order > 0
		case pb.Compare_LESS:
			ok = order < 0
		}
		if !ok {
			return false
		}
	}
	return true
}

// describe renders a response in a stable text form for comparison:
// protobuf's text format varies between builds on purpose.
func describe(m proto.Message) string {
	var b strings.Builder
	describeTo(&b, m)
	return b.String()
}

func describeTo(b *strings.Builder, m proto.Message) {
	switch r := m.(type) {
	case nil:
		b.WriteString("nil")
	case *pb.PutResponse:
		fmt.Fprintf(b, "put rev=%d", r.GetHeader().GetRevision())
		if r.PrevKv != nil {
			b.WriteString(" prev=")
			describeKV(b, r.PrevKv)
		}
	case *pb.DeleteRangeResponse:
		fmt.Fprintf(b, "del rev=%d deleted=%d", r.GetHeader().GetRevision(), r.Deleted)
		for _, kv := range r.PrevKvs {
			b.WriteString(" prev=")
			describeKV(b, kv)
		}
	case *pb.RangeResponse:
		fmt.Fprintf(b, "range rev=%d count=%d more=%t", r.GetHeader().GetRevision(), r.Count, r.More)
		for _, kv := range r.Kvs {
			b.WriteString(" ")
			describeKV(b, kv)
		}
	case *pb.TxnResponse:
		fmt.Fprintf(b, "txn rev=%d succeeded=%t [", r.GetHeader().GetRevision(), r.Succeeded)
		for i, ro := range r.Responses {
			if i > 0 {
				b.WriteString("; ")
			}
			switch v := ro.Response.(type) {
			case *pb.ResponseOp_ResponseRange:
				describeTo(b, v.ResponseRange)
			case *pb.ResponseOp_ResponsePut:
				describeTo(b, v.ResponsePut)
			case *pb.ResponseOp_ResponseDeleteRange:
				describeTo(b, v.ResponseDeleteRange)
			case *pb.ResponseOp_ResponseTxn:
				describeTo(b, v.ResponseTxn)
			}
		}
		b.WriteString("]")
	case *pb.CompactionResponse:
		fmt.Fprintf(b, "compact rev=%d", r.GetHeader().GetRevision())
	case *pb.LeaseGrantResponse:
		fmt.Fprintf(b, "grant rev=%d id=%d ttl=%d", r.GetHeader().GetRevision(), r.ID, r.TTL)
	case *pb.LeaseRevokeResponse:
		fmt.Fprintf(b, "revoke rev=%d", r.GetHeader().GetRevision())
	case *pb.LeaseKeepAliveResponse:
		fmt.Fprintf(b, "keepalive rev=%d id=%d ttl=%d", r.GetHeader().GetRevision(), r.ID, r.TTL)
	case *pb.LeaseTimeToLiveResponse:
		fmt.Fprintf(b, "ttl rev=%d id=%d ttl=%d granted=%d keys=%q", r.GetHeader().GetRevision(), r.ID, r.TTL, r.GrantedTTL, r.Keys)
	default:
		fmt.Fprintf(b, "%T", m)
	}
}

func describeKV(b *strings.Builder, kv *mvccpb.KeyValue) {
	fmt.Fprintf(b, "%s=%s/c%d/m%d/v%d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version)
	if kv.Lease != 0 {
		fmt.Fprintf(b, "/l%d", kv.Lease)
	}
}
