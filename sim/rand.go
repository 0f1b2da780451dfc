package sim

import (
	"math/bits"
	"math/rand/v2"
	"time"
)

// Stream names one independent source of randomness of a run. Each stream
// is seeded from the run's seed and its own id, so that drawing more from
// one (a new knob, a new fault) never shifts what another draws.
type Stream uint64

// The streams of a run. Member-specific streams add the member's index.
const (
	streamOptCluster Stream = 1
	streamOptNet     Stream = 2
	streamOptDisk    Stream = 3
	streamOptFault   Stream = 4
	streamOptWork    Stream = 5
	streamOptLease   Stream = 6
	// streamOptOperator draws OperatorOptions, streamOperator the
	// operator's changes and the members it adds.
	streamOptOperator Stream = 7
	streamNet         Stream = 16
	streamFault       Stream = 17
	streamWork        Stream = 18
	streamRaftCrypto  Stream = 19
	streamCheck       Stream = 20
	streamLease       Stream = 21
	streamOperator    Stream = 22
	streamWatch       Stream = 23
	// streamDisk + i drives member i's disk faults, streamCrash + i the
	// outcomes of its crashes, streamEngine + i its engine's request IDs.
	streamDisk   Stream = 1 << 8
	streamCrash  Stream = 2 << 8
	streamEngine Stream = 3 << 8
)

// splitmix64 is one step of SplitMix64, a bijective mixer: nearby seeds
// give unrelated outputs.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// streamSeed is the 64-bit seed of stream id of the run seed.
func streamSeed(seed uint64, id Stream) uint64 {
	return splitmix64(seed ^ splitmix64(uint64(id)))
}

// rng is a seeded generator with the draws the simulator needs. Every
// decision is made in integers (parts per million, nanoseconds): float
// arithmetic may differ between architectures.
type rng struct{ r *rand.Rand }

func newRNG(seed uint64, id Stream) rng {
	s := streamSeed(seed, id)
	return rng{rand.New(rand.NewPCG(s, splitmix64(s)))}
}

// intN returns a uniform integer in [0, n), n > 0, by Lemire's method on
// Uint64, whose output the PCG algorithm fixes (rand.Rand's helpers carry
// no promise of stability across Go versions).
func (g rng) intN(n uint64) uint64 {
	if n == 0 {
		panic("sim: intN(0)")
	}
	for {
		x := g.r.Uint64()
		hi, lo := bits.Mul64(x, n)
		if lo >= n || lo >= (-n)%n {
			return hi
		}
	}
}

// between returns a uniform integer in [lo, hi].
func (g rng) between(lo, hi int64) int64 {
	if hi < lo {
		panic("sim: between with hi < lo")
	}
	return lo + int64(g.intN(uint64(hi-lo)+1))
}

// chance reports true with probability ppm parts per million.
func (g rng) chance(ppm uint32) bool {
	switch {
	case ppm == 0:
		return false
	case ppm >= ppmMax:
		return true
	}
	return g.intN(ppmMax) < uint64(ppm)
}

// pick returns an index in [0, n) weighted by w.
func (g rng) pick(w []uint32) int {
	var total uint64
	for _, x := range w {
		total += uint64(x)
	}
	if total == 0 {
		return 0
	}
	r := g.intN(total)
	for i, x := range w {
		if r < uint64(x) {
			return i
		}
		r -= uint64(x)
	}
	return len(w) - 1
}

// dur returns a duration in [lo, hi].
func (g rng) dur(lo, hi time.Duration) time.Duration {
	return time.Duration(g.between(int64(lo), int64(hi)))
}

// expish returns a duration with mean about mean and a long tail: uniform
// in [0, 2*mean] nine times in ten, else up to ten times the mean. It
// stands in for an exponential draw without floats.
func (g rng) expish(mean time.Duration) time.Duration {
	if mean <= 0 {
		return 0
	}
	if g.intN(10) == 0 {
		return g.dur(0, 10*mean)
	}
	return g.dur(0, 2*mean)
}
