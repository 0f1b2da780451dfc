package raftlog

import (
	"fmt"
	"strings"

	"go.etcd.io/raft/v3/raftpb"
)

// ent builds an entry whose data names it, so a misplaced entry shows.
func ent(index, term uint64, dataBytes int) *raftpb.Entry {
	e := &raftpb.Entry{Index: new(index), Term: new(term), Type: raftpb.EntryType_EntryNormal.Enum()}
	if dataBytes > 0 {
		d := []byte(strings.Repeat(fmt.Sprintf("<%d/%d>", index, term), dataBytes/4+1))
		e.Data = d[:dataBytes]
	}
	return e
}

// ents builds entries [lo, hi) of term.
func ents(lo, hi, term uint64, dataBytes int) []*raftpb.Entry {
	var out []*raftpb.Entry
	for i := lo; i < hi; i++ {
		out = append(out, ent(i, term, dataBytes))
	}
	return out
}

func hardStateP(term, vote, commit uint64) *raftpb.HardState {
	return &raftpb.HardState{Term: new(term), Vote: new(vote), Commit: new(commit)}
}

// describeLog is a stable dump of what the Log serves through raft.Storage.
func describeLog(l *Log) string {
	var b strings.Builder
	hs, cs, err := l.InitialState()
	if err != nil {
		return "error: " + err.Error() + "\n"
	}
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	snap, _ := l.Snapshot()
	fmt.Fprintf(&b, "snapshot %d/%d voters=%v\n", snap.GetMetadata().GetIndex(), snap.GetMetadata().GetTerm(), cs.GetVoters())
	fmt.Fprintf(&b, "hardstate term=%d vote=%d commit=%d\n", hs.GetTerm(), hs.GetVote(), hs.GetCommit())
	fmt.Fprintf(&b, "entries [%d, %d]", first, last)
	if last >= first {
		es, err := l.Entries(first, last+1, ^uint64(0))
		if err != nil {
			return b.String() + " error: " + err.Error() + "\n"
		}
		b.WriteString(":")
		for _, e := range es {
			fmt.Fprintf(&b, " %d/%d", e.GetIndex(), e.GetTerm())
			if len(e.GetData()) > 0 {
				fmt.Fprintf(&b, "(%d)", len(e.GetData()))
			}
		}
	}
	b.WriteString("\n")
	return b.String()
}
