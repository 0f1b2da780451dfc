package server

import (
	"context"
	"errors"
	"sync"

	"github.com/basaltdb/basalt/engine"
	"github.com/basaltdb/basalt/engine/mvcc"
)

// compactionHashesMax is how many compaction hashes a member keeps, as
// etcd's hash storage keeps its newest 10.
const compactionHashesMax = 10

// errHashDropped marks a compaction hash not taken because the hasher was
// already behind by compactionHashesMax compactions.
var errHashDropped = errors.New("server: compaction hash not taken")

// compactionHash is the hash of the state a compaction compacted, at its
// revision, taken off the loop from the view just before it.
type compactionHash struct {
	rev int64
	// done closes once hash and compactRev, or err, are set.
	done       chan struct{}
	hash       uint32
	compactRev int64
	err        error
	// before is the view to hash; the hasher drops it once done, so it
	// pins the compacted versions only while they are hashed.
	before *mvcc.View
}

// compactionHashes answers HashKV at a compaction revision as etcd does:
// with the hash taken when the member compacted there, so that the hash
// at that revision is the same before and after the compaction, and on
// members that compacted at other moments.
type compactionHashes struct {
	mu sync.Mutex
	// newest are the newest compactions, oldest first. Invariant:
	// len(newest) <= compactionHashesMax.
	newest []*compactionHash
	// work feeds the hasher goroutine; bounded by compactionHashesMax, and
	// never blocks the loop (see add).
	work chan *compactionHash
}

func newCompactionHashes() *compactionHashes {
	h := &compactionHashes{work: make(chan *compactionHash, compactionHashesMax)}
	go h.hasher()
	return h
}

// add records compactions the engine applied. It runs on the loop and
// never blocks.
func (h *compactionHashes) add(cs []engine.Compaction) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range cs {
		e := &compactionHash{rev: c.Rev, before: c.Before, done: make(chan struct{})}
		select {
		case h.work <- e:
		default:
			e.before, e.err = nil, errHashDropped
			close(e.done)
		}
		if len(h.newest) == compactionHashesMax {
			h.newest = h.newest[1:]
		}
		h.newest = append(h.newest, e)
	}
}

// hasher hashes compacted views one after the other until close.
func (h *compactionHashes) hasher() {
	for e := range h.work {
		e.hash, _, e.err = e.before.HashKV(e.rev)
		e.compactRev = e.before.FirstRev()
		e.before = nil
		close(e.done)
	}
}

// close stops the hasher once it has worked through what it was given.
func (h *compactionHashes) close() { close(h.work) }

// lookup returns the hash taken at a compaction at rev, waiting for it if
// it is being taken; ok is false when none was taken there.
func (h *compactionHashes) lookup(ctx context.Context, rev int64) (hash uint32, compactRev int64, ok bool, err error) {
	h.mu.Lock()
	var e *compactionHash
	for i := len(h.newest) - 1; i >= 0 && e == nil; i-- {
		if h.newest[i].rev == rev {
			e = h.newest[i]
		}
	}
	h.mu.Unlock()
	if e == nil {
		return 0, 0, false, nil
	}
	select {
	case <-e.done:
	case <-ctx.Done():
		return 0, 0, false, ctx.Err()
	}
	if e.err != nil {
		return 0, 0, false, nil
	}
	return e.hash, e.compactRev, true, nil
}
