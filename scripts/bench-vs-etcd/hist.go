package main

import (
	"math/bits"
	"time"
)

// Shape of the latency histogram: log-linear, like HdrHistogram. Values
// below 2^histSubBits ns get a bucket each; above, every power of two is
// cut into 2^histSubBits equal buckets, so a bucket is at most 1/64 = 1.6%
// wide relative to its values.
const (
	histSubBits    = 6
	histSubBuckets = 1 << histSubBits
	// histBucketsMax covers every non-negative int64 nanosecond count: the
	// largest has 63 bits, so its bucket is 57*64 + 63.
	histBucketsMax = (64 - histSubBits) * histSubBuckets
)

// hist counts latencies. One worker owns one hist, so adding is not
// synchronised; merge them when the run is over.
type hist struct {
	// counts[i] is the number of latencies in bucket i, [lowerBound(i),
	// lowerBound(i+1)).
	counts [histBucketsMax]uint64
	// n is the sum of counts.
	n uint64
}

func bucketOf(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < histSubBuckets {
		return int(v)
	}
	// exp >= 1: v is in [2^(exp+histSubBits-1), 2^(exp+histSubBits)).
	exp := bits.Len64(v) - histSubBits
	sub := int(v>>(exp-1)) - histSubBuckets
	return exp*histSubBuckets + sub
}

// lowerBound is the smallest latency in bucket i.
func lowerBound(i int) time.Duration {
	if i < histSubBuckets {
		return time.Duration(i)
	}
	exp, sub := i/histSubBuckets, i%histSubBuckets
	return time.Duration(uint64(histSubBuckets+sub) << (exp - 1))
}

func (h *hist) add(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.n++
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile is the latency below which a fraction q of the samples fall,
// given as the middle of the bucket holding that sample; 0 with no
// samples.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q * float64(h.n))
	if rank >= h.n {
		rank = h.n - 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen > rank {
			lo := lowerBound(i)
			return lo + (lowerBound(i+1)-lo)/2
		}
	}
	panic("hist: counts sum to less than n")
}
