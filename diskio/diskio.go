// Package diskio is the only door between basalt's durable state and a disk.
//
// It owns the FS and File interfaces, the OS driver (the one place outside
// server/ that touches the machine) and the simulated disk used by the
// simulator and by crash tests, whose Crash returns one possible post-crash
// state of the disk.
//
// It must not know what is stored in the files: framing, checksums and
// recovery belong to raftlog. Apart from the OS driver, nothing here may use
// the os package, the wall clock, global randomness or goroutines.
//
// Durability contract, shared by every driver:
//   - data written to a File is durable only after File.Sync returns nil;
//   - a created, renamed or removed directory entry is durable only after
//     FS.SyncDir of its directory returns nil;
//   - an error from Sync leaves the file in an unknown state: callers must not
//     retry the sync and must stop (fsyncgate).
package diskio

import (
	"errors"
	"io"
)

// FS is a file system holding a member's durable state. Names are paths with
// '/' separators, as filepath gives them on Unix.
type FS interface {
	// Create creates name, or truncates it if it exists, open for reading and
	// writing.
	Create(name string) (File, error)
	// Open opens the existing file name for reading and writing.
	Open(name string) (File, error)
	// Remove removes the file name.
	Remove(name string) error
	// Rename renames oldname to newname, replacing newname if it exists.
	Rename(oldname, newname string) error
	// List returns the names of the entries of dir, sorted.
	List(dir string) ([]string, error)
	// MkdirAll creates dir and its missing parents. Like a create, a new
	// directory is durable only after SyncDir of its parent.
	MkdirAll(dir string) error
	// SyncDir makes the entries of dir durable.
	SyncDir(dir string) error
	// Lock takes an exclusive lock on the file name, creating it if needed,
	// so that two members never share one data directory. Close releases it.
	Lock(name string) (io.Closer, error)
}

// File is an open file. A File is used by one goroutine at a time.
type File interface {
	io.ReaderAt
	io.WriterAt
	// Truncate changes the size of the file.
	Truncate(size int64) error
	// Preallocate reserves space for the file's first size bytes without
	// changing what reads return for the bytes already written; bytes past
	// the old end read as zeros.
	Preallocate(size int64) error
	// Sync makes every byte written so far durable.
	Sync() error
	// Size returns the current size of the file.
	Size() (int64, error)
	// Close closes the file; it does not sync.
	Close() error
}

// ErrNotExist is returned (possibly wrapped) when a named file or directory
// does not exist. Test with errors.Is; the OS driver's errors also match
// fs.ErrNotExist.
var ErrNotExist = errors.New("diskio: file does not exist")

// ErrLocked is returned by Lock when another holder has the lock.
var ErrLocked = errors.New("diskio: file is locked by another process")
