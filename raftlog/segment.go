package raftlog

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/basaltdb/basalt/diskio"
)

const (
	walSuffix    = ".wal"
	tmpSuffix    = ".tmp"
	brokenSuffix = ".broken"
)

// segment is one WAL file.
type segment struct {
	seq uint64
	// first is the firstIndex of the segment's name and header.
	// Invariant: every entry record in the segment has index >= first.
	first uint64
	name  string // path under the FS
	f     diskio.File
	// end is where the next record goes.
	// Invariant: synced <= end.
	end int64
	// synced is the end of the bytes a completed Sync made durable.
	synced int64
	// sealed: the segment ends with a recSeal and is never written again.
	sealed bool
	// reset: the segment opens with recSnapshot, so no entry of an older
	// segment is live.
	reset bool
	// skipCRC is Options.SkipCRC, for scanning the segment.
	skipCRC bool
}

// segmentName is `<seq>-<firstIndex>.wal`, both fixed-width hex, so that
// sorted names are in sequence order.
func segmentName(seq, first uint64) string {
	return fmt.Sprintf("%016x-%016x%s", seq, first, walSuffix)
}

// parseSegmentName inverts segmentName; ok is false for any other name.
func parseSegmentName(name string) (seq, first uint64, ok bool) {
	base, found := strings.CutSuffix(name, walSuffix)
	if !found || len(base) != 33 || base[16] != '-' {
		return 0, 0, false
	}
	seq, err1 := strconv.ParseUint(base[:16], 16, 64)
	first, err2 := strconv.ParseUint(base[17:], 16, 64)
	if err1 != nil || err2 != nil || first == 0 {
		return 0, 0, false
	}
	return seq, first, true
}

// snapshotName is `<index>-<term>.snap`, fixed-width hex, so that sorted
// names are in index order.
func snapshotName(index, term uint64) string {
	return fmt.Sprintf("%016x-%016x%s", index, term, snapSuffix)
}

func parseSnapshotName(name string) (index, term uint64, ok bool) {
	base, found := strings.CutSuffix(name, snapSuffix)
	if !found || len(base) != 33 || base[16] != '-' {
		return 0, 0, false
	}
	index, err1 := strconv.ParseUint(base[:16], 16, 64)
	term, err2 := strconv.ParseUint(base[17:], 16, 64)
	if err1 != nil || err2 != nil || index == 0 {
		return 0, 0, false
	}
	return index, term, true
}
