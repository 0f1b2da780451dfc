package diskio

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path"
	"strings"
	"time"
)

// ErrInjected marks every error a Sim returns because its Injector asked
// for it. The injected errno (syscall.EIO, syscall.ENOSPC, ...) is wrapped
// too, so errors.Is matches both.
var ErrInjected = errors.New("diskio: injected fault")

// OpKind names one kind of operation on the Sim.
type OpKind uint8

const (
	OpCreate OpKind = iota
	OpOpen
	OpRemove
	OpRename
	OpList
	OpMkdirAll
	OpSyncDir
	OpLock
	OpRead
	OpWrite
	OpTruncate
	OpPreallocate
	OpSync
	OpStat
	OpClose
	opKindCount
)

var opKindNames = [opKindCount]string{
	OpCreate:      "create",
	OpOpen:        "open",
	OpRemove:      "remove",
	OpRename:      "rename",
	OpList:        "list",
	OpMkdirAll:    "mkdirall",
	OpSyncDir:     "syncdir",
	OpLock:        "lock",
	OpRead:        "read",
	OpWrite:       "write",
	OpTruncate:    "truncate",
	OpPreallocate: "preallocate",
	OpSync:        "sync",
	OpStat:        "stat",
	OpClose:       "close",
}

func (k OpKind) String() string {
	if k >= opKindCount {
		return fmt.Sprintf("OpKind(%d)", uint8(k))
	}
	return opKindNames[k]
}

// Mutating reports whether ops of kind k can change what is on the disk or
// what is durable: the ops a crash-at-every-step test steps through.
func (k OpKind) Mutating() bool {
	switch k {
	case OpCreate, OpRemove, OpRename, OpMkdirAll, OpSyncDir, OpLock,
		OpWrite, OpTruncate, OpPreallocate, OpSync:
		return true
	}
	return false
}

// Op describes one operation, as the Sim shows it to its Injector before
// running it.
type Op struct {
	Kind OpKind
	// Path is the name the op was called with; for file ops, the name the
	// file was opened with; for OpRename, the old name.
	Path string
	// NewPath is the new name of an OpRename, empty otherwise.
	NewPath string
	// Offset is the file offset of an OpRead or OpWrite, and the size
	// argument of an OpTruncate or OpPreallocate.
	Offset int64
	// Len is the number of bytes an OpRead will return (the buffer clipped
	// at the end of the file) or an OpWrite will write.
	Len int
}

func (op Op) String() string {
	switch op.Kind {
	case OpRename:
		return fmt.Sprintf("%s %s %s", op.Kind, op.Path, op.NewPath)
	case OpRead, OpWrite:
		return fmt.Sprintf("%s %s [%d, %d)", op.Kind, op.Path, op.Offset, op.Offset+int64(op.Len))
	case OpTruncate, OpPreallocate:
		return fmt.Sprintf("%s %s %d", op.Kind, op.Path, op.Offset)
	}
	return fmt.Sprintf("%s %s", op.Kind, op.Path)
}

// FaultKind says what goes wrong with one op.
type FaultKind uint8

const (
	// FaultNone lets the op run (after Latency, if any).
	FaultNone FaultKind = iota
	// FaultError fails the op with Fault.Err (syscall.EIO if nil) without
	// running it, except that a failed Sync or Close still has its side
	// effect: a failed Sync forgets the pages it did not write (fsyncgate)
	// and a failed Close closes the file.
	FaultError
	// FaultBitFlip, for OpRead only, flips bit Fault.Bit of the bytes read
	// [0, 8*Op.Len) in the returned buffer and in the stored byte, so every
	// later read sees it (latent corruption); when the stored byte was
	// synced the flip is durable too.
	FaultBitFlip
	// FaultMisdirect, for OpWrite only, lands the write's bytes at
	// Fault.Offset of the same file instead of Op.Offset. The file's size
	// still grows as if the write had landed, and the intended range keeps
	// its old bytes. The write reports success.
	FaultMisdirect
	// FaultCrash stops the disk before the op runs: it and every later op
	// fail with ErrCrashed, and the caller then takes Sim.Crash.
	FaultCrash
)

// Fault is an Injector's decision for one op. The zero Fault lets the op run.
type Fault struct {
	Kind FaultKind
	// Err is the error of a FaultError.
	Err error
	// Bit is the bit to flip for a FaultBitFlip: byte Bit/8 of the read,
	// bit Bit%8 of that byte. Invariant: 0 <= Bit < 8*Op.Len.
	Bit int64
	// Offset is where a FaultMisdirect write lands. Invariant: Offset >= 0.
	Offset int64
	// Latency is added to Sim.TakeLatency whatever the Kind; the Sim never
	// sleeps, the simulator delays the op's completion by it.
	Latency time.Duration
}

// IsZero reports whether f lets the op run unchanged.
func (f Fault) IsZero() bool { return f.Kind == FaultNone && f.Latency == 0 }

// Injector decides, before every op of a Sim, whether and how it fails.
// Injectors are called from the Sim's one goroutine and may keep state.
type Injector interface {
	Inject(op Op) Fault
}

// InjectorFunc adapts a function to Injector.
type InjectorFunc func(op Op) Fault

// Inject calls f.
func (f InjectorFunc) Inject(op Op) Fault { return f(op) }

// Predicate selects ops, for If.
type Predicate func(op Op) bool

// Reads selects OpRead.
func Reads(op Op) bool { return op.Kind == OpRead }

// Writes selects OpWrite.
func Writes(op Op) bool { return op.Kind == OpWrite }

// Syncs selects OpSync and OpSyncDir.
func Syncs(op Op) bool { return op.Kind == OpSync || op.Kind == OpSyncDir }

// Mutating selects the ops whose kind is Mutating.
func Mutating(op Op) bool { return op.Kind.Mutating() }

// Kinds selects the ops of the given kinds.
func Kinds(kinds ...OpKind) Predicate {
	var set [opKindCount]bool
	for _, k := range kinds {
		set[k] = true
	}
	return func(op Op) bool { return set[op.Kind] }
}

// PathMatch selects the ops whose Path matches pattern (path.Match syntax).
// A pattern without '/' is matched against the last element of the path, so
// "*.wal" selects WAL files in any directory; a pattern with '/' is matched
// against the whole path as given. It panics on a malformed pattern.
func PathMatch(pattern string) Predicate {
	if _, err := path.Match(pattern, ""); err != nil {
		panic(fmt.Sprintf("diskio: PathMatch(%q): %v", pattern, err))
	}
	whole := strings.Contains(pattern, "/")
	return func(op Op) bool {
		name := op.Path
		if !whole {
			name = path.Base(name)
		}
		ok, _ := path.Match(pattern, name)
		return ok
	}
}

// And selects the ops every p selects.
func And(ps ...Predicate) Predicate {
	return func(op Op) bool {
		for _, p := range ps {
			if !p(op) {
				return false
			}
		}
		return true
	}
}

// Or selects the ops some p selects.
func Or(ps ...Predicate) Predicate {
	return func(op Op) bool {
		for _, p := range ps {
			if p(op) {
				return true
			}
		}
		return false
	}
}

// Not selects the ops p does not select.
func Not(p Predicate) Predicate { return func(op Op) bool { return !p(op) } }

// If consults inj only for the ops p selects, so that inj's counters (as in
// OnIndex) count those ops only.
func If(p Predicate, inj Injector) Injector {
	return InjectorFunc(func(op Op) Fault {
		if !p(op) {
			return Fault{}
		}
		return inj.Inject(op)
	})
}

// OnIndex consults inj for the n-th op (0-based) it is consulted for, and
// for no other.
func OnIndex(n int64, inj Injector) Injector {
	var seen int64
	return InjectorFunc(func(op Op) Fault {
		i := seen
		seen++
		if i != n {
			return Fault{}
		}
		return inj.Inject(op)
	})
}

// Randomly consults inj for each op with probability ppm parts per million,
// drawing from rng.
func Randomly(ppm uint32, rng *rand.Rand, inj Injector) Injector {
	if ppm > ppmMax {
		panic(fmt.Sprintf("diskio: Randomly(%d ppm): over %d", ppm, ppmMax))
	}
	return InjectorFunc(func(op Op) Fault {
		if !chance(rng, ppm) {
			return Fault{}
		}
		return inj.Inject(op)
	})
}

// Any consults injs in order and returns the first non-zero Fault; the
// injectors after it are not consulted for that op.
func Any(injs ...Injector) Injector {
	return InjectorFunc(func(op Op) Fault {
		for _, inj := range injs {
			if f := inj.Inject(op); !f.IsZero() {
				return f
			}
		}
		return Fault{}
	})
}

// Counter passes inj's decisions through and counts the non-zero ones, so a
// test can prove that the fault it set up did fire.
type Counter struct {
	inj Injector
	// fired is the number of non-zero Faults returned so far.
	fired int64
}

// NewCounter returns a Counter over inj.
func NewCounter(inj Injector) *Counter { return &Counter{inj: inj} }

// Inject consults the wrapped injector.
func (c *Counter) Inject(op Op) Fault {
	f := c.inj.Inject(op)
	if !f.IsZero() {
		c.fired++
	}
	return f
}

// Fired returns how many non-zero Faults the Counter has passed on.
func (c *Counter) Fired() int64 { return c.fired }

// Fail fails every op it is consulted for with err (syscall.EIO,
// syscall.ENOSPC, ...).
func Fail(err error) Injector {
	return InjectorFunc(func(Op) Fault { return Fault{Kind: FaultError, Err: err} })
}

// CrashNow stops the disk at the first op it is consulted for.
func CrashNow() Injector {
	return InjectorFunc(func(Op) Fault { return Fault{Kind: FaultCrash} })
}

// Slow delays every op it is consulted for by d.
func Slow(d time.Duration) Injector {
	return InjectorFunc(func(Op) Fault { return Fault{Latency: d} })
}

// FlipBit flips one bit, drawn from rng, of each non-empty read it is
// consulted for; it leaves other ops alone.
func FlipBit(rng *rand.Rand) Injector {
	return InjectorFunc(func(op Op) Fault {
		if op.Kind != OpRead || op.Len == 0 {
			return Fault{}
		}
		return Fault{Kind: FaultBitFlip, Bit: rng.Int64N(8 * int64(op.Len))}
	})
}

// Misdirect lands each non-empty write it is consulted for at a
// sector-aligned offset drawn from rng in [0, Offset+Len], other than the
// intended one; it leaves other ops alone.
func Misdirect(rng *rand.Rand) Injector {
	return InjectorFunc(func(op Op) Fault {
		if op.Kind != OpWrite || op.Len == 0 {
			return Fault{}
		}
		sectors := (op.Offset+int64(op.Len))/sectorBytes + 1
		target := sectorBytes * rng.Int64N(sectors)
		if target == op.Offset {
			target += sectorBytes
		}
		return Fault{Kind: FaultMisdirect, Offset: target}
	})
}

// chance reports true with probability ppm parts per million. It draws
// from rng only when the answer is not certain, so that the deterministic
// settings work with a nil rng.
func chance(rng *rand.Rand, ppm uint32) bool {
	switch {
	case ppm == 0:
		return false
	case ppm >= ppmMax:
		return true
	}
	return rng.Uint32N(ppmMax) < ppm
}
