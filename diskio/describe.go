package diskio

import (
	"fmt"
	"hash/crc32"
	"maps"
	"slices"
	"strings"
)

// Describe returns a dump of the disk for golden files and debugging: one
// line per entry, depth first in name order, e.g.
//
//	d/ (entry not synced)
//	d/seg size=5 synced=0 dirty=1 "hello" (entry not synced)
//	big size=8192 synced=8192 crc32c=1c2a3e4f
//	old (removal not synced)
//
// A file shows its current size, its synced size, its dirty pages, the
// size of a truncation not yet synced (trunc=) and its contents, quoted up
// to describeContentBytesMax bytes and by CRC-32C beyond.
func (s *Sim) Describe() string {
	var b strings.Builder
	if s.crashed {
		b.WriteString("(crashed)\n")
	}
	s.describeDir(&b, s.root, "")
	return b.String()
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func (s *Sim) describeDir(b *strings.Builder, d *node, prefix string) {
	names := sortedKeys(d.dir.children)
	for name := range d.dir.synced {
		if _, ok := d.dir.children[name]; !ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		n := d.dir.children[name]
		if n == nil {
			fmt.Fprintf(b, "%s%s (removal not synced)\n", prefix, name)
			continue
		}
		b.WriteString(prefix + name)
		if n.dir != nil {
			b.WriteString("/")
		} else {
			describeFile(b, n.file)
		}
		if d.dir.synced[name] != n {
			b.WriteString(" (entry not synced)")
		}
		if s.locked[n] {
			b.WriteString(" locked")
		}
		b.WriteString("\n")
		if n.dir != nil {
			s.describeDir(b, n, prefix+name+"/")
		}
	}
}

func describeFile(b *strings.Builder, fl *fileNode) {
	fmt.Fprintf(b, " size=%d synced=%d", fl.size, fl.syncedSize)
	if n := len(fl.dirtyList); n > 0 {
		fmt.Fprintf(b, " dirty=%d", n)
	}
	if fl.truncLow < fl.syncedSize {
		fmt.Fprintf(b, " trunc=%d", fl.truncLow)
	}
	data := fl.contents()
	if len(data) <= describeContentBytesMax {
		fmt.Fprintf(b, " %q", data)
	} else {
		fmt.Fprintf(b, " crc32c=%08x", crc32.Checksum(data, castagnoli))
	}
}

// sortedKeys returns the names of m in order.
func sortedKeys(m map[string]*node) []string {
	return slices.Sorted(maps.Keys(m))
}
