//go:build difftest

package difftest

import (
	"bytes"
	"math/rand/v2"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// Lease IDs: granted and revoked explicitly, so both servers hold the same
// ones; leaseUnknown is never granted.
const (
	leaseA       = 0x10
	leaseB       = 0x20
	leaseUnknown = 0x99
)

// op is one generated request.
type op struct {
	kind string        // for the summary: put, range, txn, ...
	req  proto.Message // *pb.RangeRequest, *pb.PutRequest, ...
}

// gen draws a random request sequence. The requests depend only on the
// seed and on the reference's answers (its revision and compaction), so both
// servers see the same sequence for as long as they agree.
type gen struct {
	r      *rand.Rand
	keys   []string // a small space, so that requests collide
	values []string
	binary bool // keys and values may hold any byte (not through argv)
	leases bool // LeaseGrant/LeaseRevoke are part of the mix
	// tame is set while drawing a txn that should pass validation, so
	// that the sequence has as many executed txns as rejected ones.
	tame bool

	// rev is the reference's store revision after the last request.
	rev int64
	// compacted is the revision of the reference's last successful
	// compaction; 0 if none.
	compacted int64
}

var (
	printableKeys = []string{"a", "a/1", "a/2", "ab", "abc", "b", "b/x", "ba", "c", "foo", "foo/bar", "z"}
	binaryKeys    = append(append([]string{}, printableKeys...), "\xff", "\xff\xff", "a\xff", "\x00", "b\x00")
	printableVals = []string{"v", "v1", "v2", "value", "zzz", "42"}
	binaryVals    = append(append([]string{}, printableVals...), "", "\x00bin\xff", "\n")
)

func newGen(seed int64, binary, leases bool) *gen {
	g := &gen{
		r:      rand.New(rand.NewPCG(uint64(seed), 0x5eed)),
		binary: binary,
		leases: leases,
		rev:    1,
	}
	g.keys, g.values = printableKeys, printableVals
	if binary {
		g.keys, g.values = binaryKeys, binaryVals
	}
	return g
}

func (g *gen) p(prob float64) bool { return g.r.Float64() < prob }

// wild is p, or false while drawing a tame txn: it guards the draws that
// make a request invalid.
func (g *gen) wild(prob float64) bool { return g.p(prob) && !g.tame }

func pick[T any](g *gen, xs ...T) T { return xs[g.r.IntN(len(xs))] }

func (g *gen) key() []byte { return []byte(pick(g, g.keys...)) }

// keyOrEmpty is a key, or now and then the empty key every KV request
// rejects.
func (g *gen) keyOrEmpty() []byte {
	if g.wild(0.03) {
		return nil
	}
	return g.key()
}

func (g *gen) value() []byte {
	if g.p(0.15) {
		n := g.r.IntN(randomValueBytesMax + 1)
		b := make([]byte, n)
		for i := range b {
			if g.binary {
				b[i] = byte(g.r.IntN(256))
			} else {
				b[i] = byte('a' + g.r.IntN(26))
			}
		}
		return b
	}
	return []byte(pick(g, g.values...))
}

// prefixEnd is clientv3's GetPrefixRangeEnd.
func prefixEnd(k []byte) []byte {
	end := bytes.Clone(k)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}

// keyRange draws [key, range_end): a single key, a prefix, from-key, all
// keys, or two keys of the space in either order.
func (g *gen) keyRange(allowEmpty bool) (key, end []byte) {
	key = g.key()
	if allowEmpty {
		key = g.keyOrEmpty()
	}
	switch n := g.r.IntN(100); {
	case n < 40:
		return key, nil
	case n < 60:
		return key, prefixEnd(key)
	case n < 70:
		return key, []byte{0}
	case n < 78:
		return []byte{0}, []byte{0}
	default:
		return key, g.key()
	}
}

// readRev draws a revision to read at: mostly the latest, otherwise the
// past, the current, the compaction boundary, below it, or the future.
func (g *gen) readRev() int64 {
	lo := max(g.compacted, 1)
	if g.p(0.6) {
		return 0
	}
	if g.tame {
		return lo + g.r.Int64N(g.rev-lo+1)
	}
	switch g.r.IntN(8) {
	case 0:
		return g.rev
	case 1:
		return lo + g.r.Int64N(g.rev-lo+1)
	case 2:
		return g.compacted
	case 3:
		return max(g.compacted-1, 1)
	case 4:
		return g.rev + 1
	case 5:
		return g.rev + 1 + g.r.Int64N(20)
	case 6:
		return -1
	default:
		return 1 + g.r.Int64N(g.rev)
	}
}

// anyRev draws a revision for filters and compares, around the live range.
func (g *gen) anyRev() int64 { return g.r.Int64N(g.rev + 2) }

func (g *gen) rangeReq() *pb.RangeRequest {
	key, end := g.keyRange(true)
	r := &pb.RangeRequest{Key: key, RangeEnd: end, Revision: g.readRev()}
	if g.p(0.3) {
		r.Limit = pick[int64](g, 1, 1, 2, 3, 100, -1)
	}
	if g.p(0.35) {
		r.SortOrder = pb.RangeRequest_SortOrder(g.r.IntN(3))
		r.SortTarget = pb.RangeRequest_SortTarget(g.r.IntN(5))
		if g.wild(0.05) {
			r.SortOrder = pb.RangeRequest_SortOrder(pick[int32](g, 3, -1, 99))
		}
		if g.wild(0.05) {
			r.SortTarget = pb.RangeRequest_SortTarget(pick[int32](g, 5, -1, 42))
		}
	}
	r.Serializable = g.p(0.3)
	r.KeysOnly = g.p(0.15)
	r.CountOnly = g.p(0.1)
	if g.p(0.15) {
		if g.p(0.5) {
			r.MinModRevision = g.anyRev()
		}
		if g.p(0.5) {
			r.MaxModRevision = g.anyRev()
		}
		if g.p(0.5) {
			r.MinCreateRevision = g.anyRev()
		}
		if g.p(0.5) {
			r.MaxCreateRevision = g.anyRev()
		}
	}
	return r
}

func (g *gen) lease() int64 {
	if g.p(0.75) || g.tame {
		return 0
	}
	if !g.leases {
		return leaseUnknown
	}
	return pick[int64](g, leaseA, leaseB, leaseUnknown)
}

func (g *gen) putReq() *pb.PutRequest {
	r := &pb.PutRequest{Key: g.keyOrEmpty(), Value: g.value(), Lease: g.lease(), PrevKv: g.p(0.3)}
	if g.wild(0.08) {
		r.IgnoreValue = true
		if g.p(0.8) {
			r.Value = nil
		}
	}
	if g.wild(0.08) {
		r.IgnoreLease = true
		if g.p(0.8) {
			r.Lease = 0
		}
	}
	return r
}

func (g *gen) deleteReq() *pb.DeleteRangeRequest {
	key, end := g.keyRange(true)
	return &pb.DeleteRangeRequest{Key: key, RangeEnd: end, PrevKv: g.p(0.4)}
}

// compactReq draws a compaction: mostly a valid one, otherwise one at or
// below the last compaction, the current revision, or the future.
func (g *gen) compactReq() *pb.CompactionRequest {
	r := &pb.CompactionRequest{Physical: g.p(0.5)}
	switch n := g.r.IntN(10); {
	case n < 5 && g.rev > g.compacted:
		r.Revision = g.compacted + 1 + g.r.Int64N(g.rev-g.compacted)
	case n < 6:
		r.Revision = g.rev
	case n < 7:
		r.Revision = g.compacted
	case n < 8:
		r.Revision = g.rev + 1 + g.r.Int64N(5)
	case n < 9:
		r.Revision = pick[int64](g, 0, -3)
	default:
		r.Revision = max(g.compacted-1, 1)
	}
	return r
}

func (g *gen) compare() *pb.Compare {
	c := &pb.Compare{
		Key:    g.key(),
		Result: pb.Compare_CompareResult(g.r.IntN(4)),
		Target: pb.Compare_CompareTarget(g.r.IntN(5)),
	}
	if g.wild(0.02) {
		c.Key = nil
	}
	if g.wild(0.02) {
		c.Result = pb.Compare_CompareResult(pick[int32](g, 4, -1))
	}
	if g.p(0.25) {
		_, c.RangeEnd = g.keyRange(false)
	}
	target := c.Target
	if g.p(0.12) {
		target = pb.Compare_CompareTarget(g.r.IntN(6)) // 5: no target_union at all
	}
	switch target {
	case pb.Compare_VERSION:
		c.TargetUnion = &pb.Compare_Version{Version: g.r.Int64N(5)}
	case pb.Compare_CREATE:
		c.TargetUnion = &pb.Compare_CreateRevision{CreateRevision: g.anyRev()}
	case pb.Compare_MOD:
		c.TargetUnion = &pb.Compare_ModRevision{ModRevision: g.anyRev()}
	case pb.Compare_VALUE:
		c.TargetUnion = &pb.Compare_Value{Value: g.value()}
	case pb.Compare_LEASE:
		c.TargetUnion = &pb.Compare_Lease{Lease: pick[int64](g, 0, leaseA, leaseB)}
	}
	return c
}

// branch holds what the ops of one txn branch have written so far; a clean
// branch keeps its writes on distinct single keys, so that it passes the
// duplicate-key check, while a wild one may collide.
type branch struct {
	clean bool
	used  map[string]bool
}

func (b *branch) freshKey(g *gen) []byte {
	for range 8 {
		k := g.key()
		if !b.used[string(k)] {
			b.used[string(k)] = true
			return k
		}
	}
	return nil
}

func (g *gen) requestOp(b *branch, depth int, readOnly bool) *pb.RequestOp {
	if g.wild(0.02) {
		return &pb.RequestOp{}
	}
	n := g.r.IntN(100)
	switch {
	case readOnly || n < 35:
		return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: g.rangeReq()}}
	case n < 70:
		p := g.putReq()
		if b.clean {
			if k := b.freshKey(g); k != nil {
				p.Key = k
			}
		}
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: p}}
	case n < 88 || depth >= txnDepthMax:
		d := g.deleteReq()
		if b.clean {
			if k := b.freshKey(g); k != nil {
				d.Key, d.RangeEnd = k, nil
			}
		}
		return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: d}}
	default:
		return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: g.txnReqAt(depth+1, b, false)}}
	}
}

func (g *gen) branchOps(parent *branch, depth int, readOnly bool) []*pb.RequestOp {
	b := parent
	if b == nil {
		b = &branch{clean: g.p(0.7), used: map[string]bool{}}
	}
	ops := make([]*pb.RequestOp, g.r.IntN(branchOpsMax+1))
	for i := range ops {
		ops[i] = g.requestOp(b, depth, readOnly)
	}
	return ops
}

// txnReqAt draws a txn at nesting depth; a nested txn's branches share
// their parent branch's written keys.
func (g *gen) txnReqAt(depth int, parent *branch, readOnly bool) *pb.TxnRequest {
	t := &pb.TxnRequest{}
	for range g.r.IntN(comparesMax + 1) {
		t.Compare = append(t.Compare, g.compare())
	}
	t.Success = g.branchOps(parent, depth, readOnly)
	t.Failure = g.branchOps(parent, depth, readOnly)
	return t
}

func (g *gen) txnReq() (string, *pb.TxnRequest) {
	if g.p(0.02) {
		return "txn-too-many-ops", g.tooManyOps()
	}
	g.tame = g.p(0.6)
	defer func() { g.tame = false }()
	if g.p(0.15) {
		return "txn-read-only", g.txnReqAt(0, nil, true)
	}
	t := g.txnReqAt(0, nil, false)
	if txnHas(t, fromKeyDelete) {
		txnHas(t, putToRange)
	}
	return "txn", t
}

// txnHas reports whether f holds for any op of t, at any depth; f may
// change the op.
func txnHas(t *pb.TxnRequest, f func(*pb.RequestOp) bool) bool {
	found := false
	for _, ops := range [][]*pb.RequestOp{t.Success, t.Failure} {
		for _, o := range ops {
			if f(o) {
				found = true
			}
			if n := o.GetRequestTxn(); n != nil && txnHas(n, f) {
				found = true
			}
		}
	}
	return found
}

// fromKeyDelete matches a delete of [k, "\x00").
//
// etcd v3.7.3's duplicate-key check takes a from-key delete [k, "\x00") for
// an empty interval, so it accepts a txn that deletes a key that way and
// puts it in the same revision. etcd then crashes on it:
//   - a put with ignore_value or ignore_lease after the delete panics in
//     apply (etcdserver/txn/put.go L58: index out of range);
//   - a plain put after the delete, followed by a compaction at that
//     revision, loses the value: the next read of the key is fatal
//     ("range failed to find revision pair", mvcc/kvstore_txn.go L128).
//
// Minimal case: put a 0; txn{del a "\x00"; put a 2} (rev 3); compact 3;
// get a. The generator keeps such txns out: when a txn holds a from-key
// delete, its puts become reads of the same key.
func fromKeyDelete(o *pb.RequestOp) bool {
	d := o.GetRequestDeleteRange()
	return d != nil && bytes.Equal(d.RangeEnd, []byte{0})
}

func putToRange(o *pb.RequestOp) bool {
	if p := o.GetRequestPut(); p != nil {
		o.Request = &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: p.Key}}
	}
	return false
}

// tooManyOps builds a txn with just over --max-txn-ops compares or ops
// in one branch, or a nested txn that pushes the total over.
func (g *gen) tooManyOps() *pb.TxnRequest {
	rng := func() *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: g.key()}}}
	}
	ops := func(n int) []*pb.RequestOp {
		out := make([]*pb.RequestOp, n)
		for i := range out {
			out[i] = rng()
		}
		return out
	}
	t := &pb.TxnRequest{}
	switch g.r.IntN(4) {
	case 0:
		t.Success = ops(maxTxnOps + 1)
	case 1:
		t.Failure = ops(maxTxnOps + 1)
	case 2:
		for range maxTxnOps + 1 {
			t.Compare = append(t.Compare, &pb.Compare{Key: g.key(), Target: pb.Compare_VERSION, TargetUnion: &pb.Compare_Version{}})
		}
	default:
		// The nested txn may hold maxTxnOps-opc ops; it holds one more.
		outer := 1 + g.r.IntN(maxTxnOps/2)
		t.Success = ops(outer - 1)
		t.Success = append(t.Success, &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Success: ops(maxTxnOps - outer + 1)}}})
	}
	return t
}

func (g *gen) leaseReq() (string, proto.Message) {
	if g.p(0.5) {
		r := &pb.LeaseGrantRequest{ID: pick[int64](g, leaseA, leaseB), TTL: leaseTTLSeconds}
		if g.p(0.1) {
			r.TTL = leaseTTLTooLarge
		}
		return "lease-grant", r
	}
	return "lease-revoke", &pb.LeaseRevokeRequest{ID: pick[int64](g, leaseA, leaseB, leaseUnknown)}
}

// bigBytes is n bytes of a letter, so that etcdctl can pass it on stdin.
func (g *gen) bigBytes(n int) []byte {
	return bytes.Repeat([]byte{byte('a' + g.r.IntN(26))}, n)
}

// oversized draws a request near the size limits: over --max-request-bytes
// ("request is too large"), over the gRPC receive limit (ResourceExhausted),
// or a large one that fits.
func (g *gen) oversized() (string, proto.Message) {
	over := maxRequestBytes + sizeMarginBytes + g.r.IntN(4096)
	huge := grpcRecvBytesMax + 1 + g.r.IntN(8192)
	switch g.r.IntN(10) {
	case 0, 1, 2:
		return "put-too-large", &pb.PutRequest{Key: g.key(), Value: g.bigBytes(over)}
	case 3, 4:
		return "put-over-grpc-limit", &pb.PutRequest{Key: g.key(), Value: g.bigBytes(huge)}
	case 5, 6:
		put := &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: g.key(), Value: g.bigBytes(over)}}}
		return "txn-too-large", &pb.TxnRequest{Success: []*pb.RequestOp{put}}
	case 7:
		return "range-over-grpc-limit", &pb.RangeRequest{Key: g.bigBytes(huge)}
	case 8:
		return "range-large-key", &pb.RangeRequest{Key: g.bigBytes(over)}
	default:
		return "put-large-fits", &pb.PutRequest{Key: g.key(), Value: g.bigBytes(maxRequestBytes - sizeMarginBytes - g.r.IntN(4096))}
	}
}

// next draws the next request of the gRPC and gateway sequences.
func (g *gen) next() op {
	switch n := g.r.IntN(1000); {
	case n < 250:
		return op{"range", g.rangeReq()}
	case n < 500:
		return op{"put", g.putReq()}
	case n < 620:
		return op{"delete", g.deleteReq()}
	case n < 900:
		kind, t := g.txnReq()
		return op{kind, t}
	case n < 940:
		return op{"compact", g.compactReq()}
	case n < 990 && g.leases:
		kind, r := g.leaseReq()
		return op{kind, r}
	case n < 992:
		kind, r := g.oversized()
		return op{kind, r}
	default:
		return op{"put", g.putReq()}
	}
}
