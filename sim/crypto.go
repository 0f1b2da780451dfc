package sim

import (
	cryptorand "crypto/rand"
	"encoding/binary"
	"io"
	"math/rand/v2"
)

// This is the one file of the simulator that touches process-wide state
// (tidy_test.go exempts it): raft draws its election jitter from
// crypto/rand.Reader, with no hook in its Config, so a run points the
// reader at a seeded stream.

// RaftCryptoSeed is the seed of the stream raft's jitter draws from in the
// run of seed. testing/cryptotest.SetGlobalRandom(t, RaftCryptoSeed(seed))
// builds the same stream as SeedCryptoRand(seed), so a seed replays the
// same under go test and under basalt sim.
func RaftCryptoSeed(seed uint64) uint64 { return streamSeed(seed, streamRaftCrypto) }

// SeedCryptoRand points crypto/rand.Reader at the run's stream (ChaCha8
// keyed as testing/cryptotest keys it) and returns the function restoring
// the previous reader. Only one simulation may run in a process at a time.
func SeedCryptoRand(seed uint64) (restore func()) {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:8], RaftCryptoSeed(seed))
	prev := cryptorand.Reader
	cryptorand.Reader = chachaReader{rand.NewChaCha8(key)}
	return func() { cryptorand.Reader = prev }
}

// chachaReader reads a ChaCha8 stream; the simulator's one goroutine is
// its only user.
type chachaReader struct{ c *rand.ChaCha8 }

var _ io.Reader = chachaReader{}

func (r chachaReader) Read(p []byte) (int, error) { return r.c.Read(p) }
