package diskio

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"
)

// OS is the driver over the machine's file system. It is the only code in
// the core packages' dependency tree that calls into package os.
var OS FS = osFS{}

var _ File = (*osFile)(nil)

type osFS struct{}

// osErr makes an OS error also match ErrNotExist, so callers test one value
// whatever the driver.
func osErr(err error) error {
	if err != nil && errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %w", ErrNotExist, err)
	}
	return err
}

func (osFS) Create(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, osErr(err)
	}
	return &osFile{f: f}, nil
}

func (osFS) Open(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, osErr(err)
	}
	return &osFile{f: f}, nil
}

func (osFS) Remove(name string) error { return osErr(os.Remove(name)) }

func (osFS) Rename(oldname, newname string) error { return osErr(os.Rename(oldname, newname)) }

func (osFS) List(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, osErr(err)
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	sort.Strings(names)
	return names, nil
}

func (osFS) MkdirAll(dir string) error { return osErr(os.MkdirAll(dir, 0o700)) }

// SyncDir opens dir with O_DIRECTORY, so that syncing a file by mistake
// fails instead of passing for a directory sync.
func (osFS) SyncDir(dir string) error {
	d, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return osErr(err)
	}
	serr := d.Sync()
	cerr := d.Close()
	return errors.Join(serr, cerr)
}

func (osFS) Lock(name string) (io.Closer, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, osErr(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, filepath.Clean(name))
		}
		return nil, err
	}
	return f, nil
}

// osFile is an open OS file. It tracks Close itself so that every method
// of a closed file fails alike, as the Sim's do, instead of handing fd -1 to
// a system call.
type osFile struct {
	f      *os.File
	closed bool
}

// check returns the error of op on a closed file.
func (o *osFile) check(op string) error {
	if o.closed {
		return &fs.PathError{Op: op, Path: o.f.Name(), Err: fs.ErrClosed}
	}
	return nil
}

func (o *osFile) ReadAt(p []byte, off int64) (int, error) {
	if err := o.check("read"); err != nil {
		return 0, err
	}
	return o.f.ReadAt(p, off)
}

func (o *osFile) WriteAt(p []byte, off int64) (int, error) {
	if err := o.check("write"); err != nil {
		return 0, err
	}
	return o.f.WriteAt(p, off)
}

func (o *osFile) Truncate(size int64) error {
	if err := o.check("truncate"); err != nil {
		return err
	}
	return o.f.Truncate(size)
}

func (o *osFile) Close() error {
	if err := o.check("close"); err != nil {
		return err
	}
	o.closed = true
	return o.f.Close()
}

// Sync uses fdatasync: the WAL's records are found by reading, not by the
// file's mtime, so flushing the inode's timestamps would only cost latency.
// Size changes are metadata fdatasync does flush.
func (o *osFile) Sync() error {
	if err := o.check("sync"); err != nil {
		return err
	}
	for {
		err := unix.Fdatasync(int(o.f.Fd()))
		if err == nil {
			return nil
		}
		if err != unix.EINTR {
			return &fs.PathError{Op: "sync", Path: o.f.Name(), Err: err}
		}
	}
}

func (o *osFile) Preallocate(size int64) error {
	if err := o.check("preallocate"); err != nil {
		return err
	}
	cur, err := o.Size()
	if err != nil || size <= cur {
		return err
	}
	// Mode 0 allocates blocks and extends the size, so later fdatasyncs
	// within the reserved range need no allocation metadata.
	err = unix.Fallocate(int(o.f.Fd()), 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return o.f.Truncate(size)
	}
	if err != nil {
		return &fs.PathError{Op: "preallocate", Path: o.f.Name(), Err: err}
	}
	return nil
}

func (o *osFile) Size() (int64, error) {
	if err := o.check("stat"); err != nil {
		return 0, err
	}
	st, err := o.f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
