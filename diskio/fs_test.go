package diskio

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
)

// driver runs the commands of the golden files against one FS. Names in the
// files are relative; the OS driver's are placed under root.
type driver struct {
	fs    FS
	root  string // "" for the Sim; a temporary directory for the OS driver
	files map[string]File
	locks map[string]io.Closer
}

func newDriver(fs FS, root string) *driver {
	return &driver{fs: fs, root: root, files: make(map[string]File), locks: make(map[string]io.Closer)}
}

func (d *driver) path(name string) string {
	if d.root == "" {
		return name
	}
	return d.root + "/" + name
}

// clean removes the OS driver's root from output, so both drivers print the
// same names.
func (d *driver) clean(s string) string {
	if d.root == "" {
		return s
	}
	return strings.ReplaceAll(s, d.root+"/", "")
}

func (d *driver) result(err error) string {
	if err != nil {
		return "error: " + d.clean(err.Error())
	}
	return "ok"
}

// file returns the open file name, or an error naming the missing handle.
func (d *driver) file(t *testing.T, name string) File {
	f, ok := d.files[name]
	if !ok {
		t.Fatalf("no open file %q", name)
	}
	return f
}

// run runs one filesystem command; it returns false for a command it does
// not know.
func (d *driver) run(t *testing.T, td *datadriven.TestData) (string, bool) {
	arg := func(i int) string {
		if len(td.CmdArgs) <= i {
			td.Fatalf(t, "%s: missing argument %d", td.Cmd, i)
		}
		return td.CmdArgs[i].Key
	}
	var off, size, n int64
	td.MaybeScanArgs(t, "off", &off)
	td.MaybeScanArgs(t, "size", &size)
	td.MaybeScanArgs(t, "len", &n)
	switch td.Cmd {
	// Example: create a
	case "create", "open":
		open := d.fs.Create
		if td.Cmd == "open" {
			open = d.fs.Open
		}
		f, err := open(d.path(arg(0)))
		if err == nil {
			d.files[arg(0)] = f
		}
		return d.result(err), true
	// Example: write a off=0   (data is the input; or byte=x len=5000)
	case "write":
		data := []byte(td.Input)
		if td.HasArg("byte") {
			var b string
			td.ScanArgs(t, "byte", &b)
			data = []byte(strings.Repeat(b, int(n)))
		}
		w, err := d.file(t, arg(0)).WriteAt(data, off)
		if err != nil {
			return d.result(err), true
		}
		return fmt.Sprintf("wrote %d", w), true
	// Example: read a off=0 len=5
	case "read":
		buf := make([]byte, n)
		r, err := d.file(t, arg(0)).ReadAt(buf, off)
		switch {
		case errors.Is(err, io.EOF):
			return fmt.Sprintf("%s EOF", quote(buf[:r])), true
		case err != nil:
			return d.result(err), true
		}
		return quote(buf[:r]), true
	// Example: truncate a size=3
	case "truncate":
		return d.result(d.file(t, arg(0)).Truncate(size)), true
	// Example: preallocate a size=8192
	case "preallocate":
		return d.result(d.file(t, arg(0)).Preallocate(size)), true
	// Example: sync a
	case "sync":
		return d.result(d.file(t, arg(0)).Sync()), true
	// Example: size a
	case "size":
		sz, err := d.file(t, arg(0)).Size()
		if err != nil {
			return d.result(err), true
		}
		return fmt.Sprint(sz), true
	// Example: close a
	case "close":
		return d.result(d.file(t, arg(0)).Close()), true
	// Example: rename a b
	case "rename":
		return d.result(d.fs.Rename(d.path(arg(0)), d.path(arg(1)))), true
	// Example: remove a
	case "remove":
		return d.result(d.fs.Remove(d.path(arg(0)))), true
	// Example: list d
	case "list":
		names, err := d.fs.List(d.path(arg(0)))
		if err != nil {
			return d.result(err), true
		}
		if len(names) == 0 {
			return "(empty)", true
		}
		return strings.Join(names, " "), true
	// Example: mkdirall d/e
	case "mkdirall":
		return d.result(d.fs.MkdirAll(d.path(arg(0)))), true
	// Example: sync-dir d
	case "sync-dir":
		return d.result(d.fs.SyncDir(d.path(arg(0)))), true
	// Example: lock l
	case "lock":
		c, err := d.fs.Lock(d.path(arg(0)))
		if err == nil {
			d.locks[arg(0)] = c
		}
		return d.result(err), true
	// Example: unlock l
	case "unlock":
		c, ok := d.locks[arg(0)]
		if !ok {
			td.Fatalf(t, "no lock %q", arg(0))
		}
		return d.result(c.Close()), true
	// Example: tree
	case "tree":
		var b strings.Builder
		d.tree(t, &b, "")
		if b.Len() == 0 {
			return "(empty)", true
		}
		return b.String(), true
	}
	return "", false
}

// tree prints the files and directories under dir through the FS
// interface, so it works on both drivers.
func (d *driver) tree(t *testing.T, b *strings.Builder, dir string) {
	at := dir
	if at == "" {
		at = "."
	}
	names, err := d.fs.List(d.path(at))
	if err != nil {
		t.Fatalf("list %s: %v", at, err)
	}
	for _, name := range names {
		p := dir + name
		if _, err := d.fs.List(d.path(p)); err == nil {
			fmt.Fprintf(b, "%s/\n", p)
			d.tree(t, b, p+"/")
			continue
		}
		data := d.cat(t, p)
		fmt.Fprintf(b, "%s %s\n", p, quote(data))
	}
}

// cat returns the contents of file name.
func (d *driver) cat(t *testing.T, name string) []byte {
	f, err := d.fs.Open(d.path(name))
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		t.Fatalf("size %s: %v", name, err)
	}
	data := make([]byte, size)
	if _, err := f.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("read %s: %v", name, err)
	}
	return data
}

// quote prints short contents in full and long ones by size and checksum.
func quote(b []byte) string {
	if len(b) <= describeContentBytesMax {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("(%d bytes, crc32c=%08x)", len(b), crc32.Checksum(b, castagnoli))
}

// TestFS runs testdata/diskio/fs.txt against the Sim and the OS driver at
// once: each command runs on both and must print the same, after the OS
// driver's root is cut from its names (pebble's TestVFS). The output is the
// Sim's.
func TestFS(t *testing.T) {
	sim := newDriver(NewSim(), "")
	osd := newDriver(OS, t.TempDir())
	datadriven.RunTest(t, "../testdata/diskio/fs.txt", func(t *testing.T, td *datadriven.TestData) string {
		want, ok := sim.run(t, td)
		if !ok {
			td.Fatalf(t, "unknown command %q", td.Cmd)
		}
		got, _ := osd.run(t, td)
		if got != want {
			t.Errorf("%s: the OS driver and the Sim differ:\nos:  %s\nsim: %s", td.Pos, got, want)
		}
		return strings.TrimSuffix(want, "\n") + "\n"
	})
}
