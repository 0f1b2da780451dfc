package sim

import (
	"errors"
	"testing"
	"testing/cryptotest"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/basaltdb/basalt/engine"
)

// TestOperatorChangesMembership runs seeds with a busy operator: every
// kind of change must be committed at least once, a removed member must
// stop, and every check must pass.
func TestOperatorChangesMembership(t *testing.T) {
	var total MemberStats
	for _, seed := range []uint64{4, 8, 26} {
		cryptotest.SetGlobalRandom(t, RaftCryptoSeed(seed))
		opts := Draw(seed)
		opts.Operator.ActPPM = 700_000
		r := Run(opts)
		t.Log(r.Line())
		if r.Failure != nil {
			t.Fatalf("%s\nreplay with Operator.ActPPM = 700000", r.Line())
		}
		s := r.Stats.Members
		total.Joined += s.Joined
		total.Promoted += s.Promoted
		total.Removed += s.Removed
		total.Retired += s.Retired
		total.Updated += s.Updated
	}
	if total.Joined == 0 || total.Promoted == 0 || total.Removed == 0 || total.Retired == 0 || total.Updated == 0 {
		t.Errorf("the operator left a kind of change out: %+v", total)
	}
}

// TestDrawOperator checks that the operator runs only with a majority to
// keep (3 or 5 members), in some seeds and not others, and that its
// options are printed with the others.
func TestDrawOperator(t *testing.T) {
	on := 0
	for seed := uint64(1); seed <= 200; seed++ {
		o := Draw(seed)
		if o.Operator.ActPPM > 0 {
			on++
			if o.Members < 3 {
				t.Fatalf("seed %d: the operator runs with %d member", seed, o.Members)
			}
		}
		off := o
		off.Operator = OperatorOptions{}
		if o.String() == off.String() && o.Operator.ActPPM > 0 {
			t.Fatalf("seed %d: the operator's options are not printed", seed)
		}
	}
	if on < 60 || on > 160 {
		t.Errorf("the operator runs in %d of 200 seeds", on)
	}
}

// TestMembersModel replays conf changes through the members model and
// checks etcd's answers to them.
func TestMembersModel(t *testing.T) {
	attrs := func(id uint64, url string) []byte {
		return engine.EncodeMember(&pb.Member{ID: id, PeerURLs: []string{url}})
	}
	steps := []struct {
		typ  raftpb.ConfChangeType
		id   uint64
		ctx  []byte
		want error
	}{
		{raftpb.ConfChangeAddNode, 1, attrs(1, "http://a"), nil},
		{raftpb.ConfChangeRemoveNode, 1, nil, engine.ErrLastVoter},
		{raftpb.ConfChangeAddNode, 2, attrs(2, "http://b"), nil},
		{raftpb.ConfChangeAddNode, 2, attrs(2, "http://c"), engine.ErrMemberExists},
		{raftpb.ConfChangeAddLearnerNode, 3, attrs(3, "http://a"), engine.ErrPeerURLExists},
		{raftpb.ConfChangeAddLearnerNode, 3, attrs(3, "http://c"), nil},
		{raftpb.ConfChangeAddLearnerNode, 4, attrs(4, "http://d"), engine.ErrTooManyLearners},
		{raftpb.ConfChangeAddNode, 2, engine.PromoteContext, engine.ErrMemberNotLearner},
		{raftpb.ConfChangeAddNode, 4, engine.PromoteContext, engine.ErrMemberNotFound},
		{raftpb.ConfChangeAddNode, 3, engine.PromoteContext, nil},
		{raftpb.ConfChangeUpdateNode, 3, attrs(3, "http://b"), engine.ErrPeerURLExists},
		{raftpb.ConfChangeUpdateNode, 3, attrs(3, "http://c2"), nil},
		{raftpb.ConfChangeRemoveNode, 2, nil, nil},
		{raftpb.ConfChangeRemoveNode, 2, nil, engine.ErrMemberIDRemoved},
		{raftpb.ConfChangeAddNode, 2, attrs(2, "http://b"), engine.ErrMemberIDRemoved},
		{raftpb.ConfChangeUpdateNode, 2, attrs(2, "http://b"), engine.ErrMemberIDRemoved},
		{raftpb.ConfChangeUpdateNode, 9, attrs(9, "http://z"), engine.ErrMemberNotFound},
		{raftpb.ConfChangeRemoveNode, 9, nil, engine.ErrMemberNotFound},
	}
	mm := newMembersModel()
	for i, s := range steps {
		if got := mm.apply(confChange(s.typ, s.id, s.ctx)); !errors.Is(got, s.want) || (got == nil) != (s.want == nil) {
			t.Fatalf("step %d (%v of %d): got %v, want %v", i, s.typ, s.id, got, s.want)
		}
	}
	if got, want := listOf([]*pb.Member{{ID: 1, PeerURLs: []string{"http://a"}}, {ID: 3, PeerURLs: []string{"http://c2"}}}), "[1 voter http://a][3 voter http://c2]"; got != want {
		t.Fatalf("listOf: %s, want %s", got, want)
	}
	if v := mm.voters(); len(v) != 2 || v[0] != 1 || v[1] != 3 || len(mm.learners()) != 0 {
		t.Fatalf("voters %v learners %v, want [1 3] []", v, mm.learners())
	}
}
