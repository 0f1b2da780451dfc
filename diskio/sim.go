package diskio

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"
)

// ErrCrashed is returned (wrapped) by every op of a Sim that has crashed:
// after Crash was taken from it, or after an Injector returned FaultCrash.
var ErrCrashed = errors.New("diskio: simulated disk has crashed")

// Sim is a simulated disk held in memory, for the simulator and for crash
// tests. It is deterministic: it reads no clock, draws randomness only from
// the *rand.Rand given to Crash and to injectors, and starts no goroutine.
// It is used from one goroutine.
//
// Names are '/'-separated paths below one root; a leading '/' is optional,
// so "/a/b" and "a/b" name the same file, and "" or "." name the root.
//
// The Sim keeps apart what reads see and what the disk holds. Each file has
// current and synced contents (see fileNode); each directory has current
// and synced entries, and the directory changes not yet made durable are
// kept in order (see Sim.pending). Crash turns that into one possible disk
// after a power cut; its doc states the model.
type Sim struct {
	// root is the root directory. It is always durable.
	root *node
	// pending holds the directory changes not yet durable, oldest first.
	// Invariant: for every directory d, applying in order the changes to d
	// in pending to d's synced entries gives d's current entries.
	// Invariant: len(pending) <= dirOpsPendingMax.
	pending []*dirOp
	// locked holds the files on which a Lock is held.
	locked map[*node]bool
	// injector, if not nil, is consulted before every op.
	injector Injector
	// opCounts[k] counts the ops of kind k attempted on the live disk,
	// whether they failed or not.
	opCounts [opKindCount]int64
	// latency is the injected latency not yet taken by TakeLatency.
	latency time.Duration
	// crashed is set once the disk stopped: every op fails with ErrCrashed.
	crashed bool
}

// node is a Sim directory or file. Exactly one of dir and file is set.
type node struct {
	dir  *dirNode
	file *fileNode
}

// dirNode holds a directory's entries.
type dirNode struct {
	// children holds the current entries.
	children map[string]*node
	// synced holds the entries a crash keeps for sure: the changes since are
	// in Sim.pending.
	synced map[string]*node
}

// dirOp is one directory change (an entry created, removed or renamed)
// that survives a crash whole or not at all.
type dirOp struct {
	// changes are the entries the op set, in order.
	changes []entryChange
	// deps are the pending ops that last set, before this op, the entries
	// it sets. The op survives a crash only if they do, so each entry's
	// surviving changes are a prefix of its history, as in a journal, and no
	// crash shows a renamed file at two names or a file created in the place
	// of one whose removal was lost.
	deps []*dirOp
	// durable is set once SyncDir made the op durable; it is then out of
	// Sim.pending.
	durable bool
}

// entryChange is the setting of directory dir's entry name to target (nil
// to remove it).
type entryChange struct {
	dir    *node
	name   string
	target *node
}

var (
	_ FS   = (*Sim)(nil)
	_ File = (*simFile)(nil)
)

// NewSim returns an empty simulated disk.
func NewSim() *Sim {
	return &Sim{root: newDir(), locked: make(map[*node]bool)}
}

func newDir() *node {
	return &node{dir: &dirNode{children: make(map[string]*node), synced: make(map[string]*node)}}
}

// SetInjector makes inj decide the faults of every later op; nil removes it.
func (s *Sim) SetInjector(inj Injector) { s.injector = inj }

// Count returns the number of ops of the given kinds attempted so far
// (including failed ones) on the live disk.
func (s *Sim) Count(kinds ...OpKind) int64 {
	var n int64
	for _, k := range kinds {
		n += s.opCounts[k]
	}
	return n
}

// Mutations returns the number of Mutating ops attempted so far: the index
// space of a crash-at-every-step test (If(Mutating, OnIndex(k, CrashNow()))).
func (s *Sim) Mutations() int64 {
	var n int64
	for k := range opKindCount {
		if k.Mutating() {
			n += s.opCounts[k]
		}
	}
	return n
}

// TakeLatency returns the latency injected since the last call, for the
// simulator to add to the ops' completion time.
func (s *Sim) TakeLatency() time.Duration {
	d := s.latency
	s.latency = 0
	return d
}

// Crashed reports whether the disk has stopped.
func (s *Sim) Crashed() bool { return s.crashed }

// begin counts op and consults the injector. It returns the error the op
// must fail with, or the bit-flip or misdirect fault it must apply.
func (s *Sim) begin(op Op) (Fault, error) {
	if s.crashed {
		return Fault{}, &fs.PathError{Op: op.Kind.String(), Path: op.Path, Err: ErrCrashed}
	}
	s.opCounts[op.Kind]++
	if s.injector == nil {
		return Fault{}, nil
	}
	f := s.injector.Inject(op)
	s.latency += f.Latency
	switch f.Kind {
	case FaultNone:
		return Fault{}, nil
	case FaultError:
		errno := f.Err
		if errno == nil {
			errno = syscall.EIO
		}
		return Fault{}, fmt.Errorf("%w: %w", ErrInjected, &fs.PathError{Op: op.Kind.String(), Path: op.Path, Err: errno})
	case FaultCrash:
		s.crashed = true
		return Fault{}, fmt.Errorf("%w: %w", ErrInjected, &fs.PathError{Op: op.Kind.String(), Path: op.Path, Err: ErrCrashed})
	case FaultBitFlip:
		if op.Kind != OpRead {
			panic(fmt.Sprintf("diskio: injector returned a bit flip for %v", op))
		}
	case FaultMisdirect:
		if op.Kind != OpWrite {
			panic(fmt.Sprintf("diskio: injector returned a misdirected write for %v", op))
		}
	default:
		panic(fmt.Sprintf("diskio: injector returned fault kind %d for %v", f.Kind, op))
	}
	return f, nil
}

// components splits name into its elements below the root.
func components(name string) []string {
	p := path.Clean("/" + name)
	if p == "/" {
		return nil
	}
	return strings.Split(p[1:], "/")
}

// lookup is where a name leads: its parent directory and last element (nil
// and "" for the root) and the node there (nil if there is none).
type lookup struct {
	parent *node
	base   string
	n      *node
	// ancestors are the directories on the way, the root first.
	ancestors []*node
}

// walk resolves name. Its error, for op, says that a directory on the way
// is missing (ErrNotExist) or is a file (ENOTDIR).
func (s *Sim) walk(op, name string) (lookup, error) {
	elems := components(name)
	l := lookup{n: s.root}
	for _, e := range elems {
		if l.n == nil {
			return l, notExist(op, name)
		}
		if l.n.dir == nil {
			return l, &fs.PathError{Op: op, Path: name, Err: syscall.ENOTDIR}
		}
		l.ancestors = append(l.ancestors, l.n)
		l.parent, l.base, l.n = l.n, e, l.n.dir.children[e]
	}
	return l, nil
}

// notExist returns the error for a missing name, shaped like the OS
// driver's.
func notExist(op, name string) error {
	return fmt.Errorf("%w: %w", ErrNotExist, &fs.PathError{Op: op, Path: name, Err: syscall.ENOENT})
}

// renameError is shaped like os.LinkError, as the OS driver returns it.
type renameError struct {
	old, new string
	err      error
}

func (e *renameError) Error() string { return "rename " + e.old + " " + e.new + ": " + e.err.Error() }
func (e *renameError) Unwrap() error { return e.err }

func (s *Sim) openFile(n *node, name string) *simFile {
	return &simFile{s: s, n: n, fl: n.file, name: name}
}

// Create creates or truncates name.
func (s *Sim) Create(name string) (File, error) {
	if _, err := s.begin(Op{Kind: OpCreate, Path: name}); err != nil {
		return nil, err
	}
	l, err := s.walk("open", name)
	if err != nil {
		return nil, err
	}
	switch {
	case l.n == nil:
		l.n = &node{file: &fileNode{}}
		s.record(entryChange{l.parent, l.base, l.n})
	case l.n.dir != nil:
		return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EISDIR}
	default:
		l.n.file.truncate(0)
	}
	return s.openFile(l.n, name), nil
}

// Open opens the existing file name.
func (s *Sim) Open(name string) (File, error) {
	if _, err := s.begin(Op{Kind: OpOpen, Path: name}); err != nil {
		return nil, err
	}
	l, err := s.walk("open", name)
	switch {
	case err != nil:
		return nil, err
	case l.n == nil:
		return nil, notExist("open", name)
	case l.n.dir != nil:
		return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EISDIR}
	}
	return s.openFile(l.n, name), nil
}

// Remove removes the file or empty directory name.
func (s *Sim) Remove(name string) error {
	if _, err := s.begin(Op{Kind: OpRemove, Path: name}); err != nil {
		return err
	}
	l, err := s.walk("remove", name)
	switch {
	case err != nil:
		return err
	case l.n == nil:
		return notExist("remove", name)
	case l.parent == nil:
		return &fs.PathError{Op: "remove", Path: name, Err: syscall.EINVAL}
	case l.n.dir != nil && len(l.n.dir.children) > 0:
		return &fs.PathError{Op: "remove", Path: name, Err: syscall.ENOTEMPTY}
	}
	s.record(entryChange{l.parent, l.base, nil})
	return nil
}

// Rename renames oldname to newname atomically, replacing newname if it is
// a file. Like the OS driver (os.Rename) it refuses to replace a directory.
func (s *Sim) Rename(oldname, newname string) error {
	if _, err := s.begin(Op{Kind: OpRename, Path: oldname, NewPath: newname}); err != nil {
		return err
	}
	fail := func(errno error) error {
		err := error(&renameError{old: oldname, new: newname, err: errno})
		if errno == syscall.ENOENT {
			err = fmt.Errorf("%w: %w", ErrNotExist, err)
		}
		return err
	}
	errnoOf := func(err error) error {
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
			return pe.Err
		}
		return err
	}
	src, oerr := s.walk("rename", oldname)
	if oerr == nil && src.n == nil {
		oerr = syscall.ENOENT
	}
	dst, nerr := s.walk("rename", newname)
	if nerr == nil && dst.n != nil && dst.n.dir != nil {
		if oerr != nil {
			return fail(errnoOf(oerr))
		}
		return fail(syscall.EEXIST)
	}
	switch {
	case oerr != nil:
		return fail(errnoOf(oerr))
	case nerr != nil:
		return fail(errnoOf(nerr))
	case src.parent == nil || dst.parent == nil:
		return fail(syscall.EBUSY)
	case src.n == dst.n:
		return nil
	case slices.Contains(dst.ancestors, src.n):
		return fail(syscall.EINVAL)
	case src.n.dir != nil && dst.n != nil:
		return fail(syscall.ENOTDIR)
	}
	s.record(entryChange{src.parent, src.base, nil}, entryChange{dst.parent, dst.base, src.n})
	return nil
}

// List returns the sorted entries of dir.
func (s *Sim) List(dir string) ([]string, error) {
	if _, err := s.begin(Op{Kind: OpList, Path: dir}); err != nil {
		return nil, err
	}
	d, err := s.openDir(dir)
	if err != nil {
		return nil, err
	}
	return sortedKeys(d.dir.children), nil
}

// openDir resolves the existing directory dir, with the OS driver's errors.
func (s *Sim) openDir(dir string) (*node, error) {
	l, err := s.walk("open", dir)
	switch {
	case err != nil:
		return nil, err
	case l.n == nil:
		return nil, notExist("open", dir)
	case l.n.dir == nil:
		return nil, &fs.PathError{Op: "open", Path: dir, Err: syscall.ENOTDIR}
	}
	return l.n, nil
}

// MkdirAll creates dir and its missing parents, each new directory being a
// separate change of its parent.
func (s *Sim) MkdirAll(dir string) error {
	if _, err := s.begin(Op{Kind: OpMkdirAll, Path: dir}); err != nil {
		return err
	}
	elems := components(dir)
	cur := s.root
	for i, e := range elems {
		next := cur.dir.children[e]
		if next == nil {
			next = newDir()
			s.record(entryChange{cur, e, next})
		}
		if next.dir == nil {
			at := strings.Join(elems[:i+1], "/")
			if i == len(elems)-1 {
				at = dir
			}
			return &fs.PathError{Op: "mkdir", Path: at, Err: syscall.ENOTDIR}
		}
		cur = next
	}
	return nil
}

// Lock takes the lock on name, creating the file if needed.
func (s *Sim) Lock(name string) (io.Closer, error) {
	if _, err := s.begin(Op{Kind: OpLock, Path: name}); err != nil {
		return nil, err
	}
	l, err := s.walk("open", name)
	switch {
	case err != nil:
		return nil, err
	case l.n == nil:
		l.n = &node{file: &fileNode{}}
		s.record(entryChange{l.parent, l.base, l.n})
	case l.n.dir != nil:
		return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EISDIR}
	}
	if s.locked[l.n] {
		return nil, fmt.Errorf("%w: %s", ErrLocked, path.Clean(name))
	}
	s.locked[l.n] = true
	return &simLock{s: s, n: l.n, name: name}, nil
}

// simLock is a held Sim lock.
type simLock struct {
	s      *Sim
	n      *node
	name   string
	closed bool
}

// Close releases the lock.
func (l *simLock) Close() error {
	switch {
	case l.s.crashed:
		return &fs.PathError{Op: "close", Path: l.name, Err: ErrCrashed}
	case l.closed:
		return &fs.PathError{Op: "close", Path: l.name, Err: fs.ErrClosed}
	}
	l.closed = true
	delete(l.s.locked, l.n)
	return nil
}

// record applies a directory op's changes to the current entries and
// queues the op until a SyncDir makes it durable.
func (s *Sim) record(changes ...entryChange) {
	if len(s.pending) >= dirOpsPendingMax {
		panic(fmt.Sprintf("diskio: %d directory changes pending: the caller never syncs its directories", len(s.pending)))
	}
	op := &dirOp{changes: changes}
	for _, c := range changes {
		if dep := s.lastSetter(c.dir, c.name); dep != nil && !slices.Contains(op.deps, dep) {
			op.deps = append(op.deps, dep)
		}
		if c.target == nil {
			delete(c.dir.dir.children, c.name)
		} else {
			c.dir.dir.children[c.name] = c.target
		}
	}
	s.pending = append(s.pending, op)
}

// lastSetter returns the pending op that last set entry name of dir, nil
// if that entry is durable.
func (s *Sim) lastSetter(dir *node, name string) *dirOp {
	for i := len(s.pending) - 1; i >= 0; i-- {
		for _, c := range s.pending[i].changes {
			if c.dir == dir && c.name == name {
				return s.pending[i]
			}
		}
	}
	return nil
}

// SyncDir makes the entries of dir durable. Every pending op that changed
// dir becomes durable whole, with the ops it depends on: a rename across
// directories is durable once either directory is synced, as one journal
// transaction is on Linux file systems.
func (s *Sim) SyncDir(dir string) error {
	if _, err := s.begin(Op{Kind: OpSyncDir, Path: dir}); err != nil {
		return err
	}
	d, err := s.openDir(dir)
	if err != nil {
		return err
	}
	chosen := make(map[*dirOp]bool)
	for i := len(s.pending) - 1; i >= 0; i-- {
		op := s.pending[i]
		for _, c := range op.changes {
			if c.dir == d {
				chosen[op] = true
			}
		}
		if chosen[op] {
			for _, dep := range op.deps {
				chosen[dep] = true
			}
		}
	}
	kept := s.pending[:0]
	for _, op := range s.pending {
		if !chosen[op] {
			kept = append(kept, op)
			continue
		}
		for _, c := range op.changes {
			if c.target == nil {
				delete(c.dir.dir.synced, c.name)
			} else {
				c.dir.dir.synced[c.name] = c.target
			}
		}
		op.durable = true
	}
	clear(s.pending[len(kept):])
	s.pending = kept
	if !maps.Equal(d.dir.children, d.dir.synced) {
		panic(fmt.Sprintf("diskio: SyncDir(%s) left entries %v durable, current %v",
			dir, sortedKeys(d.dir.synced), sortedKeys(d.dir.children)))
	}
	return nil
}
