package engine

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"
)

// TestEntryID: entryID reads the request ID of any encoded request, and
// finds none in a request without a header; ownProposal hands out a
// pending proposal only for exactly the bytes proposed, and only once.
func TestEntryID(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		req := &pb.InternalRaftRequest{Put: &pb.PutRequest{
			Key:   rapid.SliceOfN(rapid.Byte(), 1, 20).Draw(rt, "key"),
			Value: rapid.SliceOf(rapid.Byte()).Draw(rt, "value"),
			Lease: rapid.Int64().Draw(rt, "lease"),
		}}
		bare, err := proto.Marshal(req)
		if err != nil {
			rt.Fatal(err)
		}
		if id, ok := entryID(bare); ok {
			rt.Fatalf("entryID found %d in a request without a header", id)
		}
		id := ID(rapid.Uint64Range(1, 1<<63).Draw(rt, "id")) // never 0 (newID)
		req.Header = &pb.RequestHeader{ID: uint64(id)}
		data, err := proto.Marshal(req)
		if err != nil {
			rt.Fatal(err)
		}
		if got, ok := entryID(data); !ok || got != id {
			rt.Fatalf("entryID = %d, %v; want %d", got, ok, id)
		}
		// A header given twice merges: the last ID wins.
		twice := protowire.AppendTag(data, headerField, protowire.BytesType)
		twice = protowire.AppendBytes(twice, protowire.AppendVarint(protowire.AppendTag(nil, requestIDField, protowire.VarintType), uint64(id+1)))
		if got, ok := entryID(twice); !ok || got != id+1 {
			rt.Fatalf("entryID of a request with two headers = %d, %v; want %d", got, ok, id+1)
		}

		n := &Node{proposed: map[ID]proposal{id: {data: data, op: req}}}
		if n.ownProposal(twice) != nil {
			rt.Fatal("ownProposal took other bytes with the same ID for the proposal")
		}
		if n.ownProposal(data) != req {
			rt.Fatal("ownProposal did not hand out the proposal for its bytes")
		}
		if n.ownProposal(data) != nil {
			rt.Fatal("ownProposal handed out a proposal twice")
		}
	})
}
