package engine

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Errors a membership change is answered with. They are decided at apply,
// from the replicated members table, so every member decides alike; a
// refused change still applies, as a configuration change of no node.
var (
	ErrMemberNotFound   = errors.New("engine: member not found")
	ErrMemberIDRemoved  = errors.New("engine: member ID was removed")
	ErrMemberExists     = errors.New("engine: member ID already exists")
	ErrPeerURLExists    = errors.New("engine: peer URLs already exist")
	ErrMemberNotLearner = errors.New("engine: can only promote a learner member")
	ErrTooManyLearners  = errors.New("engine: too many learner members in cluster")
	// ErrLastVoter refuses to remove the only voter, which raft cannot
	// apply (etcd panics on it).
	ErrLastVoter = errors.New("engine: cannot remove the only voting member")
)

// members is the cluster's membership, replicated through raft: conf
// change entries carry a member's ID, peer URLs and learner flag in their
// Context (an encoded etcdserverpb.Member), and ClusterMemberAttrSet
// requests publish its name and client URLs once it runs.
//
// Invariant: values of byID are never modified once stored (a change
// stores a new Member), so a list handed out stays valid.
// Invariant: no ID is in both byID and removed.
type members struct {
	byID    map[uint64]*pb.Member
	removed map[uint64]struct{}
	// list is byID ordered by ID; nil when it must be rebuilt.
	list []*pb.Member
}

func newMembers() members {
	return members{byID: make(map[uint64]*pb.Member), removed: make(map[uint64]struct{})}
}

// sorted returns the members ordered by ID; the caller must not modify it.
func (ms *members) sorted() []*pb.Member {
	if ms.list == nil {
		ms.list = make([]*pb.Member, 0, len(ms.byID))
		for _, m := range ms.byID {
			ms.list = append(ms.list, m)
		}
		slices.SortFunc(ms.list, func(a, b *pb.Member) int { return cmp.Compare(a.ID, b.ID) })
	}
	return ms.list
}

func (ms *members) removedIDs() []uint64 {
	ids := make([]uint64, 0, len(ms.removed))
	for id := range ms.removed {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (ms *members) put(m *pb.Member) {
	ms.byID[m.ID] = m
	ms.list = nil
}

// PromoteContext is the Context of the AddNode conf change that promotes
// a learner to a voter.
var PromoteContext = []byte("basalt:promote")

// EncodeMember encodes m as the Context of the conf change that adds it
// (or of a bootstrap Peer).
func EncodeMember(m *pb.Member) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	assert(err == nil, "engine: encoding member %x: %v", m.GetID(), err)
	return b
}

// applyConfChange decides a committed conf change against the members
// table, updates the table when it is valid, and returns the answer for
// its proposer. A refused change has its NodeID cleared, so raft applies
// it as no change.
func (n *Node) applyConfChange(cc *raftpb.ConfChange) (proto.Message, error) {
	var err error
	if voters := n.confState.GetVoters(); cc.GetType() == raftpb.ConfChangeRemoveNode && len(voters) == 1 && voters[0] == cc.GetNodeId() {
		err = ErrLastVoter
	} else {
		err = n.members.change(cc)
	}
	if err != nil {
		cc.NodeId = new(uint64(raft.None))
		return nil, err
	}
	return &pb.MemberListResponse{Members: n.members.sorted()}, nil
}

// change applies one conf change to the table; see applyConfChange.
func (ms *members) change(cc *raftpb.ConfChange) error {
	id := cc.GetNodeId()
	_, removed := ms.removed[id]
	old := ms.byID[id]
	switch cc.GetType() {
	case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
		if removed {
			return ErrMemberIDRemoved
		}
		if bytes.Equal(cc.GetContext(), PromoteContext) {
			switch {
			case cc.GetType() != raftpb.ConfChangeAddNode || old == nil:
				return ErrMemberNotFound
			case !old.IsLearner:
				return ErrMemberNotLearner
			}
			m := proto.Clone(old).(*pb.Member)
			m.IsLearner = false
			ms.put(m)
			return nil
		}
		if old != nil {
			return ErrMemberExists
		}
		// A bootstrap peer may come without attributes (the simulator's).
		m := &pb.Member{ID: id}
		if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(cc.GetContext(), m); err != nil || m.ID != id {
			return fmt.Errorf("%w: conf change for member %x carries attributes of %x (%v)", ErrUnknownRequest, id, m.ID, err)
		}
		m.IsLearner = cc.GetType() == raftpb.ConfChangeAddLearnerNode
		if ms.peerURLsUsed(m.PeerURLs, 0) {
			return ErrPeerURLExists
		}
		if m.IsLearner && ms.learners() >= learnersMax {
			return ErrTooManyLearners
		}
		ms.put(m)
	case raftpb.ConfChangeRemoveNode:
		if removed {
			return ErrMemberIDRemoved
		}
		if old == nil {
			return ErrMemberNotFound
		}
		delete(ms.byID, id)
		ms.list = nil
		ms.removed[id] = struct{}{}
	case raftpb.ConfChangeUpdateNode:
		if removed {
			return ErrMemberIDRemoved
		}
		if old == nil {
			return ErrMemberNotFound
		}
		upd := new(pb.Member)
		if err := proto.Unmarshal(cc.GetContext(), upd); err != nil {
			return fmt.Errorf("%w: conf change for member %x: %v", ErrUnknownRequest, id, err)
		}
		if ms.peerURLsUsed(upd.PeerURLs, id) {
			return ErrPeerURLExists
		}
		m := proto.Clone(old).(*pb.Member)
		m.PeerURLs = upd.PeerURLs
		ms.put(m)
	default:
		return fmt.Errorf("%w: conf change type %v", ErrUnknownRequest, cc.GetType())
	}
	return nil
}

// peerURLsUsed reports whether a member other than except uses one of urls.
func (ms *members) peerURLsUsed(urls []string, except uint64) bool {
	for _, m := range ms.sorted() {
		if m.ID == except {
			continue
		}
		for _, u := range m.PeerURLs {
			if slices.Contains(urls, u) {
				return true
			}
		}
	}
	return false
}

func (ms *members) learners() int {
	k := 0
	for _, m := range ms.byID {
		if m.IsLearner {
			k++
		}
	}
	return k
}

// applyMemberAttrs publishes a running member's name and client URLs. A
// member that is gone is ignored: its publication raced its removal.
func (n *Node) applyMemberAttrs(r *membershippb.ClusterMemberAttrSetRequest) proto.Message {
	if old, ok := n.members.byID[r.GetMember_ID()]; ok {
		m := proto.Clone(old).(*pb.Member)
		m.Name = r.GetMemberAttributes().GetName()
		m.ClientURLs = slices.Clone(r.GetMemberAttributes().GetClientUrls())
		n.members.put(m)
	}
	return &pb.MemberListResponse{Members: n.members.sorted()}
}

// membersImage is the members table as a snapshot carries it.
type membersImage struct {
	list    []*pb.Member
	removed []uint64
}

func (n *Node) membersImage() membersImage {
	return membersImage{list: n.members.sorted(), removed: n.members.removedIDs()}
}

// writeMembers writes section 4: n u32 (at most membersMax), then n times
// len u32 and the deterministic protobuf of an etcdserverpb.Member,
// ordered by ID; then r u32 (at most membersMax) and r removed IDs u64,
// ascending.
func writeMembers(w io.Writer, img membersImage) error {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(img.list)))
	for _, m := range img.list {
		p := EncodeMember(m)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(img.removed)))
	for _, id := range img.removed {
		b = binary.LittleEndian.AppendUint64(b, id)
	}
	_, err := w.Write(b)
	return err
}

func readMembers(r io.Reader) (members, error) {
	ms := newMembers()
	var b [8]byte
	if err := readFull(r, b[:4], "members"); err != nil {
		return ms, err
	}
	count := binary.LittleEndian.Uint32(b[:4])
	if count > membersMax {
		return ms, snapCorrupt("%d members", count)
	}
	last := uint64(0)
	for range count {
		if err := readFull(r, b[:4], "members"); err != nil {
			return ms, err
		}
		size := binary.LittleEndian.Uint32(b[:4])
		if size > memberBytesMax {
			return ms, snapCorrupt("member of %d bytes", size)
		}
		p := make([]byte, size)
		if err := readFull(r, p, "members"); err != nil {
			return ms, err
		}
		m := new(pb.Member)
		if err := proto.Unmarshal(p, m); err != nil {
			return ms, snapCorrupt("member: %v", err)
		}
		if m.ID <= last {
			return ms, snapCorrupt("member %x after %x", m.ID, last)
		}
		last = m.ID
		ms.byID[m.ID] = m
	}
	if err := readFull(r, b[:4], "removed members"); err != nil {
		return ms, err
	}
	count = binary.LittleEndian.Uint32(b[:4])
	if count > membersMax {
		return ms, snapCorrupt("%d removed members", count)
	}
	for range count {
		if err := readFull(r, b[:], "removed members"); err != nil {
			return ms, err
		}
		ms.removed[binary.LittleEndian.Uint64(b[:])] = struct{}{}
	}
	return ms, nil
}
