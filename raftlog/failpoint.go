package raftlog

import (
	"fmt"

	"github.com/pingcap/failpoint"
)

// The crash points, as pingcap/failpoint names. They are evaluated in
// every build (not only after failpoint-ctl rewriting), so that tests, the
// simulator and a real process (GO_FAILPOINTS) reach them; an evaluation
// that finds no failpoint enabled costs a map lookup. Enable one with a
// count term, e.g. `failpoint.Enable(FailpointWALAfterSync, "2*off->1*return(true)")`
// fires at the third sync. A returned value makes the operation fail with
// ErrFailpoint, which is fatal for the Log like any other error, as a crash
// would be; the `panic` term crashes the process instead.
const (
	// FailpointWALBeforeSync: records written, fsync not yet issued.
	FailpointWALBeforeSync = failpointPrefix + fpWALBeforeSync
	// FailpointWALAfterSync: fsync returned, the caller not yet told.
	FailpointWALAfterSync = failpointPrefix + fpWALAfterSync
	// FailpointSnapBeforeRename: snapshot temp file complete and fsynced.
	FailpointSnapBeforeRename = failpointPrefix + fpSnapBeforeRename
	// FailpointSnapAfterRename: renamed, directory not yet fsynced.
	FailpointSnapAfterRename = failpointPrefix + fpSnapAfterRename
	// FailpointBeforeRelease: a new base is durable, older segments and
	// snapshots not yet removed.
	FailpointBeforeRelease = failpointPrefix + fpBeforeRelease

	failpointPrefix    = "github.com/basaltdb/basalt/raftlog/"
	fpWALBeforeSync    = "walBeforeSync"
	fpWALAfterSync     = "walAfterSync"
	fpSnapBeforeRename = "snapBeforeRename"
	fpSnapAfterRename  = "snapAfterRename"
	fpBeforeRelease    = "beforeRelease"
)

// crashPoint evaluates the failpoint path (one of the Failpoint constants);
// it returns ErrFailpoint when the failpoint is enabled and its current
// term yields a value (an `off` term yields none).
func crashPoint(path string) error {
	v, err := failpoint.Eval(path)
	if err != nil || v == nil {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrFailpoint, path[len(failpointPrefix):])
}
