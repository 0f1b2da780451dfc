package sim

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// porcupineTimeout bounds the search on one history; a search that runs
// out is logged, not failed (porcupine's Unknown).
const porcupineTimeout = 20 * time.Second

// historyShownMax bounds the operations a porcupine failure prints.
const historyShownMax = 60

// The per-key register model: the black-box check of the client history,
// independent of the log. Each single-key op (put, linearizable get,
// delete, compare-and-set txn) is an operation on its key's register.

type regInput struct {
	kind   opKind
	value  string
	cmpMod int64
}

type regOutput struct {
	rev       int64
	exists    bool
	value     string
	modRev    int64
	deleted   int64
	succeeded bool
}

type regState struct {
	exists bool
	value  string
	modRev int64
}

var registerModel = porcupine.Model{
	Init: func() any { return regState{} },
	Hash: func(state any) uint64 {
		s := state.(regState)
		h := splitmix64(uint64(s.modRev) ^ boolWord(s.exists)<<63)
		for i := 0; i < len(s.value); i++ {
			h = (h ^ uint64(s.value[i])) * 1099511628211
		}
		return h
	},
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(regState), input.(regInput), output.(regOutput)
		switch in.kind {
		case opPut:
			if out.rev <= s.modRev {
				return false, s
			}
			return true, regState{exists: true, value: in.value, modRev: out.rev}
		case opGet:
			return out.exists == s.exists && (!s.exists || out.value == s.value && out.modRev == s.modRev), s
		case opDelete:
			if !s.exists {
				return out.deleted == 0, s
			}
			if out.deleted != 1 || out.rev <= s.modRev {
				return false, s
			}
			return true, regState{modRev: out.rev}
		case opDeleteRange:
			// The range deletes the key iff it exists then.
			if !s.exists {
				return true, s
			}
			if out.rev <= s.modRev {
				return false, s
			}
			return true, regState{modRev: out.rev}
		case opTxn:
			mod := int64(0)
			if s.exists {
				mod = s.modRev
			}
			if cond := mod == in.cmpMod; out.succeeded != cond {
				return false, s
			}
			if !out.succeeded {
				return out.exists == s.exists && (!s.exists || out.value == s.value && out.modRev == s.modRev), s
			}
			if out.rev <= s.modRev || !out.exists || out.value != in.value || out.modRev != out.rev {
				return false, s
			}
			return true, regState{exists: true, value: in.value, modRev: out.rev}
		}
		return false, s
	},
	DescribeOperation: func(input, output any) string {
		return fmt.Sprintf("%v -> %+v", input, output)
	},
}

// registerOp projects an attempt onto its key's register, with the answer
// it got, or the log's answer for an attempt that committed unanswered.
func (c *checker) registerOp(o *op, a *attempt) (porcupine.Operation, bool) {
	in := regInput{kind: o.kind}
	var resp proto.Message
	ret := int64(a.answered)
	switch {
	case a.state == attemptOK && a.err == nil:
		resp = a.resp
	case o.write != nil && a.id != 0:
		mr, ok := c.byID[uint64(a.id)]
		if !ok || mr.err != nil {
			return porcupine.Operation{}, false
		}
		// It took effect between its sending and the moment the
		// oracle first saw its entry committed.
		resp, ret = mr.resp, int64(c.committedAt[mr.index-1])
	default:
		return porcupine.Operation{}, false
	}
	var out regOutput
	switch o.kind {
	case opPut:
		in.value = string(o.write.Put.Value)
		out.rev = resp.(*pb.PutResponse).GetHeader().GetRevision()
	case opGet:
		if o.serializable || o.read.Revision != 0 {
			return porcupine.Operation{}, false
		}
		out.exists, out.value, out.modRev = single(resp.(*pb.RangeResponse))
	case opDelete, opDeleteRange:
		r := resp.(*pb.DeleteRangeResponse)
		out.rev, out.deleted = r.GetHeader().GetRevision(), r.Deleted
	case opTxn:
		r := resp.(*pb.TxnResponse)
		in.value = string(o.write.Txn.Success[0].GetRequestPut().Value)
		in.cmpMod = o.write.Txn.Compare[0].GetModRevision()
		out.succeeded, out.rev = r.Succeeded, r.GetHeader().GetRevision()
		out.exists, out.value, out.modRev = single(r.Responses[len(r.Responses)-1].GetResponseRange())
	default:
		return porcupine.Operation{}, false
	}
	return porcupine.Operation{ClientId: o.client + 1, Input: in, Call: int64(a.sent), Output: out, Return: ret, Metadata: o.key}, true
}

func single(r *pb.RangeResponse) (bool, string, int64) {
	if len(r.GetKvs()) != 1 {
		return false, "", 0
	}
	kv := r.Kvs[0]
	return true, string(kv.Value), kv.ModRevision
}

// checkPorcupine checks each key's history for linearizability.
func (c *checker) checkPorcupine() {
	byKey := map[string][]porcupine.Operation{}
	for _, o := range c.w.work.ops {
		keys := []string{o.key}
		if o.kind == opDeleteRange {
			// A range delete is an op on every key of its range.
			d := o.write.DeleteRange
			keys = keys[:0]
			for _, k := range c.w.work.keys {
				if k >= string(d.Key) && k < string(d.RangeEnd) {
					keys = append(keys, k)
				}
			}
		}
		for _, a := range o.attempts {
			op, ok := c.registerOp(o, a)
			for _, k := range keys {
				if ok && k != "" {
					op.Metadata = k
					byKey[k] = append(byKey[k], op)
				}
			}
		}
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		history := byKey[k]
		if porcupine.CheckOperationsTimeout(registerModel, history, porcupineTimeout) == porcupine.Illegal {
			var b strings.Builder
			for i, op := range history {
				if i == historyShownMax {
					fmt.Fprintf(&b, "\n  ... %d more", len(history)-i)
					break
				}
				fmt.Fprintf(&b, "\n  client %d [%v, %v] %+v -> %+v", op.ClientId-1, time.Duration(op.Call), time.Duration(op.Return), op.Input, op.Output)
			}
			c.w.fail("linearizability (porcupine)", fmt.Sprintf("the history of key %s (%d operations) is not linearizable:%s", k, len(history), b.String()))
			return
		}
	}
}
