package diskio

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"syscall"
)

// page is one page of a Sim file. A page may be shared by a file's current
// and synced contents and by the Sims that Crash derives, so it is changed
// in place only by the file that owns it (see fileNode.dirty).
type page [pageBytes]byte

// fileNode is a Sim file: its current contents, as reads see them (the page
// cache), and its synced contents, as the disk holds them.
type fileNode struct {
	// size is the current size in bytes.
	// Invariant: 0 <= size <= fileBytesMax.
	size int64
	// pages holds the current contents, page i covering
	// [i*pageBytes, (i+1)*pageBytes); a nil page reads as zeros.
	// Invariant: len(pages) == pagesFor(size).
	// Invariant: the bytes of the last page at or past size are zero.
	pages []*page
	// dirty[i] says that page i changed since the last Sync and is still to
	// be written back: a crash keeps, drops or tears it. A page that is not
	// dirty survives a crash only as its synced bytes.
	// Invariant: len(dirty) == len(pages).
	// Invariant: a dirty non-nil page is referenced by pages only, so it may
	// be changed in place.
	dirty []bool
	// dirtyList holds the indexes i with dirty[i], so that a Sync costs what
	// it writes, not the file's size.
	dirtyList []int64
	// syncedSize and synced are the size and contents as of the last Sync.
	// Bytes of synced pages at or past syncedSize mean nothing.
	// Invariant: len(synced) == pagesFor(syncedSize).
	syncedSize int64
	synced     []*page
	// truncLow is the smallest size the file had since the last Sync; a
	// crash may or may not keep the truncation to it.
	// Invariant: truncLow <= min(size, syncedSize).
	truncLow int64
}

func pagesFor(size int64) int64 { return (size + pageBytes - 1) / pageBytes }

// pageAt returns page i of pages, nil (zeros) past the end.
func pageAt(pages []*page, i int64) *page {
	if i >= int64(len(pages)) {
		return nil
	}
	return pages[i]
}

// byteAt returns byte pos of pages.
func byteAt(pages []*page, pos int64) byte {
	pg := pageAt(pages, pos/pageBytes)
	if pg == nil {
		return 0
	}
	return pg[pos%pageBytes]
}

// markDirty makes page i owned and dirty, copying it if it may be shared.
func (fl *fileNode) markDirty(i int64) {
	if fl.dirty[i] {
		return
	}
	if pg := fl.pages[i]; pg != nil {
		cp := *pg
		fl.pages[i] = &cp
	}
	fl.dirty[i] = true
	fl.dirtyList = append(fl.dirtyList, i)
}

// writable returns page i, dirty and ready to be changed in place.
func (fl *fileNode) writable(i int64) *page {
	fl.markDirty(i)
	if fl.pages[i] == nil {
		fl.pages[i] = new(page)
	}
	return fl.pages[i]
}

func (fl *fileNode) read(p []byte, off int64) {
	for len(p) > 0 {
		i, j := off/pageBytes, off%pageBytes
		n := min(int64(len(p)), pageBytes-j)
		if pg := fl.pages[i]; pg != nil {
			copy(p[:n], pg[j:j+n])
		} else {
			clear(p[:n])
		}
		p, off = p[n:], off+n
	}
}

func (fl *fileNode) write(p []byte, off int64) {
	fl.grow(off + int64(len(p)))
	for len(p) > 0 {
		i, j := off/pageBytes, off%pageBytes
		n := copy(fl.writable(i)[j:], p)
		p, off = p[n:], off+int64(n)
	}
}

// grow extends the file to size bytes of which the new ones are zeros. The
// pages it extends become dirty, the one holding the old end included:
// whether the size change survives a crash is decided page by page, like
// written data. (So a page whose Sync failed is written again, whole, when
// the file grows from inside it.)
func (fl *fileNode) grow(size int64) {
	if size <= fl.size {
		return
	}
	first := fl.size / pageBytes
	n := pagesFor(size)
	for int64(len(fl.pages)) < n {
		fl.pages = append(fl.pages, nil)
		fl.dirty = append(fl.dirty, false)
	}
	for i := first; i < n; i++ {
		fl.markDirty(i)
	}
	fl.size = size
}

func (fl *fileNode) truncate(size int64) {
	if size >= fl.size {
		fl.grow(size)
		return
	}
	n := pagesFor(size)
	clear(fl.pages[n:])
	fl.pages, fl.dirty = fl.pages[:n], fl.dirty[:n]
	fl.dirtyList = slices.DeleteFunc(fl.dirtyList, func(i int64) bool { return i >= n })
	if j := size % pageBytes; j != 0 {
		clear(fl.writable(n - 1)[j:])
	}
	fl.size = size
	fl.truncLow = min(fl.truncLow, size)
}

// sync writes the dirty pages and the size to the disk.
func (fl *fileNode) sync() {
	n := int64(len(fl.pages))
	if int64(len(fl.synced)) > n {
		clear(fl.synced[n:])
		fl.synced = fl.synced[:n]
	}
	for int64(len(fl.synced)) < n {
		fl.synced = append(fl.synced, nil)
	}
	for _, i := range fl.dirtyList {
		fl.synced[i] = fl.pages[i]
		fl.dirty[i] = false
	}
	fl.dirtyList = fl.dirtyList[:0]
	fl.syncedSize, fl.truncLow = fl.size, fl.size
}

// forgetDirty is what a failed fsync does on Linux: the pages it failed to
// write are marked clean, so reads still see them but no later sync writes
// them, and a crash loses them (fsyncgate).
func (fl *fileNode) forgetDirty() {
	for _, i := range fl.dirtyList {
		fl.dirty[i] = false
	}
	fl.dirtyList = fl.dirtyList[:0]
}

// flip flips the bits in mask of byte pos, in the current contents and, if
// the byte there was durable, on the disk too.
func (fl *fileNode) flip(pos int64, mask byte) {
	i, j := pos/pageBytes, pos%pageBytes
	was := byteAt(fl.pages, pos)
	if pos < fl.syncedSize && byteAt(fl.synced, pos) == was {
		var cp page
		if pg := fl.synced[i]; pg != nil {
			cp = *pg
		}
		cp[j] ^= mask
		fl.synced[i] = &cp
	}
	// The flip is not a write: it leaves the page's dirty state alone.
	cp := new(page)
	if pg := fl.pages[i]; pg != nil {
		*cp = *pg
	}
	cp[j] ^= mask
	fl.pages[i] = cp
}

// contents returns a copy of the current contents.
func (fl *fileNode) contents() []byte {
	b := make([]byte, fl.size)
	fl.read(b, 0)
	return b
}

// errNegativeOffset matches the os package's error for a negative offset.
var errNegativeOffset = errors.New("negative offset")

// simFile is an open Sim file.
type simFile struct {
	s  *Sim
	n  *node
	fl *fileNode
	// name is the name the file was opened with; errors and Ops carry it.
	name   string
	closed bool
}

// check returns the error of any op on f once the disk crashed or f closed.
func (f *simFile) check(op string) error {
	if f.s.crashed {
		return &fs.PathError{Op: op, Path: f.name, Err: ErrCrashed}
	}
	if f.closed {
		return &fs.PathError{Op: op, Path: f.name, Err: fs.ErrClosed}
	}
	return nil
}

func (f *simFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.check("read"); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "readat", Path: f.name, Err: errNegativeOffset}
	}
	n := int(min(int64(len(p)), max(f.fl.size-off, 0)))
	fault, err := f.s.begin(Op{Kind: OpRead, Path: f.name, Offset: off, Len: n})
	if err != nil {
		return 0, err
	}
	f.fl.read(p[:n], off)
	if fault.Kind == FaultBitFlip {
		if fault.Bit < 0 || fault.Bit >= 8*int64(n) {
			panic(fmt.Sprintf("diskio: bit flip at bit %d of a %d-byte read of %s", fault.Bit, n, f.name))
		}
		mask := byte(1) << (fault.Bit % 8)
		p[fault.Bit/8] ^= mask
		f.fl.flip(off+fault.Bit/8, mask)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *simFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.check("write"); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "writeat", Path: f.name, Err: errNegativeOffset}
	}
	if off+int64(len(p)) > fileBytesMax {
		return 0, &fs.PathError{Op: "write", Path: f.name, Err: syscall.EFBIG}
	}
	fault, err := f.s.begin(Op{Kind: OpWrite, Path: f.name, Offset: off, Len: len(p)})
	if err != nil {
		return 0, err
	}
	if fault.Kind == FaultMisdirect {
		target := fault.Offset
		if target < 0 || target+int64(len(p)) > fileBytesMax {
			panic(fmt.Sprintf("diskio: write of %d bytes of %s misdirected to offset %d", len(p), f.name, target))
		}
		f.fl.grow(off + int64(len(p)))
		off = target
	}
	f.fl.write(p, off)
	return len(p), nil
}

func (f *simFile) Truncate(size int64) error {
	if err := f.check("truncate"); err != nil {
		return err
	}
	if size < 0 {
		return &fs.PathError{Op: "truncate", Path: f.name, Err: syscall.EINVAL}
	}
	if size > fileBytesMax {
		return &fs.PathError{Op: "truncate", Path: f.name, Err: syscall.EFBIG}
	}
	if _, err := f.s.begin(Op{Kind: OpTruncate, Path: f.name, Offset: size}); err != nil {
		return err
	}
	f.fl.truncate(size)
	return nil
}

// Preallocate extends the file with zeros, like the OS driver's fallocate;
// the Sim has no blocks to reserve.
func (f *simFile) Preallocate(size int64) error {
	if err := f.check("preallocate"); err != nil {
		return err
	}
	if size > fileBytesMax {
		return &fs.PathError{Op: "preallocate", Path: f.name, Err: syscall.EFBIG}
	}
	if _, err := f.s.begin(Op{Kind: OpPreallocate, Path: f.name, Offset: size}); err != nil {
		return err
	}
	f.fl.grow(size)
	return nil
}

func (f *simFile) Sync() error {
	if err := f.check("sync"); err != nil {
		return err
	}
	if _, err := f.s.begin(Op{Kind: OpSync, Path: f.name}); err != nil {
		if errors.Is(err, ErrInjected) && !errors.Is(err, ErrCrashed) {
			f.fl.forgetDirty()
		}
		return err
	}
	f.fl.sync()
	return nil
}

func (f *simFile) Size() (int64, error) {
	if err := f.check("stat"); err != nil {
		return 0, err
	}
	if _, err := f.s.begin(Op{Kind: OpStat, Path: f.name}); err != nil {
		return 0, err
	}
	return f.fl.size, nil
}

func (f *simFile) Close() error {
	if err := f.check("close"); err != nil {
		return err
	}
	_, err := f.s.begin(Op{Kind: OpClose, Path: f.name})
	if !errors.Is(err, ErrCrashed) {
		f.closed = true
	}
	return err
}
