package engine

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"pgregory.net/rapid"

	"github.com/basaltdb/basalt/diskio"
	"github.com/basaltdb/basalt/engine/mvcc"
)

// leaseModel is what a sole member's leases must be: the harness ticks
// every 100ms with an election timeout of 10 ticks, so the minimum TTL is
// 2s, a lease of ttl seconds lasts 10*ttl ticks, and a restarted member
// (a new leader, its tick count back at 0) gives every lease 10 ticks
// more than its TTL. TTLs stay below the checkpoint interval.
type leaseModel struct {
	now uint64
	// expiry is each lease's expiry tick, ttl its TTL.
	expiry, ttl map[int64]uint64
	// keys are the live keys and their lease (0 for none).
	keys map[string]int64
}

func (m *leaseModel) grant(id int64, ttl uint64) error {
	if _, ok := m.ttl[id]; ok {
		return ErrLeaseExist
	}
	ttl = max(ttl, 2)
	m.ttl[id], m.expiry[id] = ttl, m.now+10*ttl
	return nil
}

func (m *leaseModel) revoke(id int64) error {
	if _, ok := m.ttl[id]; !ok {
		return ErrLeaseNotFound
	}
	delete(m.ttl, id)
	delete(m.expiry, id)
	maps.DeleteFunc(m.keys, func(_ string, l int64) bool { return l == id })
	return nil
}

func (m *leaseModel) put(key string, id int64) error {
	if _, ok := m.ttl[id]; id != 0 && !ok {
		return ErrLeaseNotFound
	}
	m.keys[key] = id
	return nil
}

func (m *leaseModel) tick() {
	m.now++
	for _, id := range slices.Sorted(maps.Keys(m.expiry)) {
		if m.expiry[id] <= m.now {
			m.revoke(id)
		}
	}
}

func (m *leaseModel) restart() {
	m.now = 0
	for id, ttl := range m.ttl {
		m.expiry[id] = 10 + 10*ttl
	}
}

// check compares the member with the model: the leases, their TTLs and
// keys, and the store's keys with their leases.
func (m *leaseModel) check(t *rapid.T, h *harness) {
	if got, want := h.node.Leases(), slices.Sorted(maps.Keys(m.ttl)); !slices.Equal(got, want) {
		t.Fatalf("leases %v, model %v", got, want)
	}
	for id, ttl := range m.ttl {
		st, err := h.node.LeaseTimeToLive(id, true)
		if err != nil {
			t.Fatalf("lease %d: %v", id, err)
		}
		var keys []string
		for k, l := range m.keys {
			if l == id {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		wantTTL := int64((m.expiry[id]-m.now)*100-1) / 1000
		if st.GrantedTTL != int64(ttl) || st.TTL != wantTTL || fmt.Sprint(st.Keys) != fmt.Sprint(byteSlices(keys)) {
			t.Fatalf("lease %d: %+v; model TTL %d of %d, keys %q", id, st, wantTTL, ttl, keys)
		}
	}
	res, err := h.view.Range([]byte{0}, []byte{0}, mvcc.RangeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, kv := range res.KVs {
		got[string(kv.Key)] = kv.Lease
	}
	if !maps.Equal(got, m.keys) {
		t.Fatalf("store's keys %v, model %v", got, m.keys)
	}
}

func byteSlices(ss []string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

// TestLeaseProperty: any mix of grants, revokes, puts with and without
// leases, deletes, renewals, ticks, snapshots and restarts leaves the
// member's leases, their TTLs, their keys and the store as the model has
// them.
func TestLeaseProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		h := &harness{t: rt, disk: diskio.NewSim(), snapshotEntries: uint64(rapid.IntRange(1, 8).Draw(rt, "snapshotEntries"))}
		h.start()
		m := &leaseModel{expiry: map[int64]uint64{}, ttl: map[int64]uint64{}, keys: map[string]int64{}}
		key := rapid.SampledFrom([]string{"a", "b", "c", "d"})
		leaseID := rapid.Int64Range(1, 5)
		same := func(what string, got, want error) {
			if !errors.Is(got, want) {
				rt.Fatalf("%s: %v, model %v", what, got, want)
			}
		}
		for range rapid.IntRange(1, 80).Draw(rt, "steps") {
			switch rapid.IntRange(0, 9).Draw(rt, "action") {
			case 0, 1:
				id, ttl := leaseID.Draw(rt, "id"), rapid.Uint64Range(0, 6).Draw(rt, "ttl")
				_, err := h.write(&pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: id, TTL: int64(ttl)}})
				same("grant", err, m.grant(id, ttl))
			case 2:
				id := leaseID.Draw(rt, "id")
				_, err := h.write(&pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}})
				same("revoke", err, m.revoke(id))
			case 3, 4:
				k, id := key.Draw(rt, "key"), rapid.Int64Range(0, 5).Draw(rt, "lease")
				_, err := h.write(&pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(k), Value: []byte("v"), Lease: id}})
				same("put", err, m.put(k, id))
			case 5:
				k := key.Draw(rt, "key")
				h.write(&pb.InternalRaftRequest{DeleteRange: &pb.DeleteRangeRequest{Key: []byte(k)}})
				delete(m.keys, k)
			case 6:
				id := leaseID.Draw(rt, "id")
				ttl, err := h.node.Renew(id)
				h.stabilize()
				if _, ok := m.ttl[id]; !ok {
					same("renew", err, ErrLeaseNotFound)
					break
				}
				if err != nil || ttl != int64(m.ttl[id]) {
					rt.Fatalf("renew %d: %d, %v; model TTL %d", id, ttl, err, m.ttl[id])
				}
				m.expiry[id] = m.now + 10*m.ttl[id]
			case 7, 8:
				for range rapid.IntRange(1, 40).Draw(rt, "ticks") {
					h.node.Tick()
					h.stabilize()
					m.tick()
				}
			case 9:
				if err := h.log.Close(); err != nil {
					rt.Fatal(err)
				}
				h.start()
				m.restart()
			}
			m.check(rt, h)
		}
	})
}
