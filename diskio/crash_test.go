package diskio

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
)

// TestCrashGolden runs testdata/diskio/crash.txt: the filesystem commands of
// fs.txt on a Sim, plus crash, describe and sectors.
func TestCrashGolden(t *testing.T) {
	sim := NewSim()
	d := newDriver(sim, "")
	// view is the disk sectors reads: the one the last crash printed.
	view := sim
	datadriven.RunTest(t, "../testdata/diskio/crash.txt", func(t *testing.T, td *datadriven.TestData) string {
		switch td.Cmd {
		// Example: crash mode=drop|keep|random [seed=1] [keep=ppm torn=ppm meta=ppm] [try]
		// It prints the disk after the crash and, unless try is given,
		// continues on it; with try, a later crash starts again from the
		// same crashed disk.
		case "crash":
			o := crashOptions(t, td)
			var seed uint64
			td.MaybeScanArgs(t, "seed", &seed)
			next := sim.CrashWith(rand.New(rand.NewPCG(seed, 0)), o)
			view = next
			if !td.HasArg("try") {
				sim = next
				d.fs = next
			}
			return orEmpty(next.Describe())
		// Example: describe
		case "describe":
			return orEmpty(sim.Describe())
		// Example: sectors a   (on the disk the last crash printed)
		case "sectors":
			return sectors(newDriver(view, "").cat(t, td.CmdArgs[0].Key))
		}
		view = sim
		out, ok := d.run(t, td)
		if !ok {
			td.Fatalf(t, "unknown command %q", td.Cmd)
		}
		return out + "\n"
	})
}

func orEmpty(s string) string {
	if s == "" {
		return "(empty)\n"
	}
	return s
}

// crashOptions reads the CrashOptions of a crash command.
func crashOptions(t *testing.T, td *datadriven.TestData) CrashOptions {
	var mode string
	td.ScanArgs(t, "mode", &mode)
	var o CrashOptions
	switch mode {
	case "drop":
		o = CrashDropAll
	case "keep":
		o = CrashKeepAll
	case "random":
		o = DefaultCrashOptions
	default:
		td.Fatalf(t, "unknown crash mode %q", mode)
	}
	for key, p := range map[string]*uint32{"keep": &o.PageKeepPPM, "torn": &o.PageTornPPM, "meta": &o.MetaKeepPPM} {
		if td.HasArg(key) {
			var v int
			td.ScanArgs(t, key, &v)
			*p = uint32(v)
		}
	}
	return o
}

// sectors draws a file one page per line and one character per 512-byte
// sector: the sector's byte if all its bytes are that one, '.' for zeros,
// '*' for a mix. The last sector may be partial.
func sectors(data []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "size %d\n", len(data))
	for lo := 0; lo < len(data); lo += pageBytes {
		fmt.Fprintf(&b, "%5d: ", lo)
		for s := lo; s < min(lo+pageBytes, len(data)); s += sectorBytes {
			sector := data[s:min(s+sectorBytes, len(data))]
			c := sector[0]
			for _, x := range sector {
				if x != c {
					c = '*'
				}
			}
			if c == 0 {
				c = '.'
			}
			b.WriteByte(c)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
