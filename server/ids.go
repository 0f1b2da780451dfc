package server

import (
	"crypto/sha1"
	"encoding/binary"
	"net/url"
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// memberID derives a member's ID from its peer URLs and the cluster token
// the way etcd does, so that the same flags give the same IDs as etcd:
// the first 8 bytes, big-endian, of sha1(sorted peer URLs joined + token).
func memberID(peerURLs []url.URL, token string) uint64 {
	urls := make([]string, len(peerURLs))
	for i := range peerURLs {
		urls[i] = peerURLs[i].String()
	}
	sort.Strings(urls)
	sum := sha1.Sum([]byte(strings.Join(urls, "") + token))
	return binary.BigEndian.Uint64(sum[:8])
}

// clusterID derives the cluster's ID from its members' IDs as etcd does:
// the first 8 bytes of sha1 over the sorted IDs, each 8 bytes big-endian.
func clusterID(memberIDs []uint64) uint64 {
	ids := append([]uint64(nil), memberIDs...)
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	b := make([]byte, 8*len(ids))
	for i, id := range ids {
		binary.BigEndian.PutUint64(b[8*i:], id)
	}
	sum := sha1.Sum(b)
	return binary.BigEndian.Uint64(sum[:8])
}

// idGenerator makes IDs unique across members and restarts the way etcd's
// idutil.Generator does: the member ID's low 16 bits, then the low 40 bits
// of the start time in milliseconds, then a counter of 8 bits that carries
// into the time.
type idGenerator struct {
	prefix uint64
	suffix atomic.Uint64
}

const (
	idTimeBits    = 40
	idCounterBits = 8
	idSuffixBits  = idTimeBits + idCounterBits
)

func newIDGenerator(memberID uint64, now time.Time) *idGenerator {
	g := &idGenerator{prefix: uint64(uint16(memberID)) << idSuffixBits}
	ms := uint64(now.UnixMilli()) & (1<<idTimeBits - 1)
	g.suffix.Store(ms << idCounterBits)
	return g
}

// Next returns the next ID.
func (g *idGenerator) Next() uint64 {
	return g.prefix | g.suffix.Add(1)&(1<<idSuffixBits-1)
}
