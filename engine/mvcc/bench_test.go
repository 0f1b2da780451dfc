package mvcc

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

func benchKeys(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("/registry/pods/default/pod-%08d", i))
	}
	return keys
}

var benchValue = make([]byte, 256)

func storeWithKeys(keys [][]byte) *Store {
	s := New()
	for i := 0; i < len(keys); i += 100 {
		txn := s.Begin()
		for _, k := range keys[i:min(i+100, len(keys))] {
			txn.Put(k, benchValue, 0, false)
		}
		txn.End()
	}
	return s
}

var (
	bigOnce  sync.Once
	bigKeys  [][]byte
	bigStore *Store
)

// bigStore1M is a store with 1M keys, shared by the read benchmarks.
func bigStore1M() (*Store, [][]byte) {
	bigOnce.Do(func() {
		bigKeys = benchKeys(1_000_000)
		bigStore = storeWithKeys(bigKeys)
	})
	return bigStore, bigKeys
}

// compactAll keeps benchmarks that write for a long time at a bounded size.
func compactAll(b *testing.B, s *Store) {
	b.StopTimer()
	if err := s.Compact(s.Rev()); err != nil {
		b.Fatal(err)
	}
	for !s.CompactStep(1 << 20) {
	}
	b.StartTimer()
}

func BenchmarkPutNewKeys(b *testing.B) {
	keys := benchKeys(b.N)
	s := New()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		txn := s.Begin()
		txn.Put(keys[i], benchValue, 0, false)
		txn.End()
	}
}

// BenchmarkPutOverwrite overwrites random keys of a 100k-key store. viewEvery=N takes a View
// every N puts, as the engine does after each applied batch, which makes the writer copy the
// B-tree paths and keyIndexes that the View shares.
func BenchmarkPutOverwrite(b *testing.B) {
	for _, viewEvery := range []int{0, 64, 8, 1} {
		b.Run(fmt.Sprintf("viewEvery=%d", viewEvery), func(b *testing.B) {
			keys := benchKeys(100_000)
			s := storeWithKeys(keys)
			rng := rand.New(rand.NewPCG(1, 2))
			order := make([]int, 1<<16)
			for i := range order {
				order[i] = rng.IntN(len(keys))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				txn := s.Begin()
				txn.Put(keys[order[i&(len(order)-1)]], benchValue, 0, false)
				txn.End()
				if viewEvery > 0 && i%viewEvery == 0 {
					s.View()
				}
				if i%200_000 == 199_999 {
					compactAll(b, s)
				}
			}
		})
	}
}

func BenchmarkTxn3Puts(b *testing.B) {
	keys := benchKeys(100_000)
	s := storeWithKeys(keys)
	rng := rand.New(rand.NewPCG(3, 4))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		txn := s.Begin()
		for range 3 {
			txn.Put(keys[rng.IntN(len(keys))], benchValue, 0, false)
		}
		txn.End()
		if i%100_000 == 99_999 {
			compactAll(b, s)
		}
	}
}

func BenchmarkRange1Key(b *testing.B) {
	s, keys := bigStore1M()
	v := s.View()
	rng := rand.New(rand.NewPCG(5, 6))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		res, err := v.Range(keys[rng.IntN(len(keys))], nil, RangeOptions{})
		if err != nil || len(res.KVs) != 1 {
			b.Fatal(err)
		}
	}
}

func BenchmarkRange1kKeys(b *testing.B) {
	s, keys := bigStore1M()
	v := s.View()
	rng := rand.New(rand.NewPCG(7, 8))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		i := rng.IntN(len(keys) - 1000)
		res, err := v.Range(keys[i], keys[i+1000], RangeOptions{})
		if err != nil || len(res.KVs) != 1000 {
			b.Fatal(err)
		}
	}
}

// BenchmarkRangeLimit10 reads 10 keys of a prefix holding every key, and counts the whole prefix.
func BenchmarkRangeLimit10(b *testing.B) {
	s, _ := bigStore1M()
	v := s.View()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		res, err := v.Range([]byte("/registry/pods/"), []byte("/registry/pods0"), RangeOptions{Limit: 10})
		if err != nil || len(res.KVs) != 10 || res.Count != 1_000_000 {
			b.Fatal(err, res.Count)
		}
	}
}

// BenchmarkCount1M is count_only over a prefix holding 900k of 1M keys: ranks, not a walk.
func BenchmarkCount1M(b *testing.B) {
	s, _ := bigStore1M()
	v := s.View()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		res, err := v.Range([]byte("/registry/pods/default/pod-001"), []byte("/registry/pods0"),
			RangeOptions{CountOnly: true})
		if err != nil || res.Count != 900_000 {
			b.Fatal(err, res.Count)
		}
	}
}

// BenchmarkView measures View after a write (a real copy) and with nothing changed (cached).
func BenchmarkView(b *testing.B) {
	b.Run("afterWrite", func(b *testing.B) {
		keys := benchKeys(100_000)
		s := storeWithKeys(keys)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			b.StopTimer()
			txn := s.Begin()
			txn.Put(keys[i%len(keys)], benchValue, 0, false)
			txn.End()
			b.StartTimer()
			s.View()
		}
	})
	b.Run("unchanged", func(b *testing.B) {
		s := New()
		mustPut(s, "a", "1")
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			s.View()
		}
	})
}

// BenchmarkCompactStep is the cost per version removed.
func BenchmarkCompactStep(b *testing.B) {
	keys := benchKeys(10_000)
	s := storeWithKeys(keys)
	for i := range b.N {
		txn := s.Begin()
		txn.Put(keys[i%len(keys)], benchValue, 0, false)
		txn.End()
	}
	if err := s.Compact(s.Rev()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for !s.CompactStep(1000) {
	}
}

func BenchmarkHashKV100k(b *testing.B) {
	s := storeWithKeys(benchKeys(100_000))
	v := s.View()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, _, err := v.HashKV(0); err != nil {
			b.Fatal(err)
		}
	}
}
