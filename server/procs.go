package server

import (
	"os"
	"runtime"

	"go.uber.org/zap"
)

// procsMin is the fewest Ps (GOMAXPROCS) a member runs with, even on one core (taskset, or a
// cgroup limit of one CPU, for which Go picks one P). The loop waits for each WAL fdatasync,
// about half its time under load, inside a system call. With a single P, that P stays with the
// call until the runtime's monitor takes it back for the request goroutines, and the loop must
// then win a P back from them. Pinned to one core, put/200 gave 3.9k requests/s with one P and
// 12.4k with two (etcd v3.7.3 on that core: 5.9k with one, 7.3k with two); with
// --unsafe-no-fsync one P was as fast as two, which singles out the fsync. With two cores or
// more the runtime's own choice is kept: a third P on two cores measured within noise for
// put/200 and worse for put/1. (Once set, GOMAXPROCS no longer follows changes of the CPU
// limit, which matters little for a member limited to one CPU.)
const procsMin = 2

// tuneProcs raises GOMAXPROCS to procsMin unless the operator set GOMAXPROCS. It returns the
// function that restores the previous value.
func tuneProcs(lg *zap.Logger) (restore func()) {
	return raiseProcs(lg, os.Getenv("GOMAXPROCS") != "")
}

func raiseProcs(lg *zap.Logger, operatorSet bool) (restore func()) {
	n := runtime.GOMAXPROCS(0)
	if operatorSet || n >= procsMin {
		return func() {}
	}
	lg.Info("raising GOMAXPROCS so that a WAL fsync does not stall the member", zap.Int("from", n), zap.Int("to", procsMin))
	runtime.GOMAXPROCS(procsMin)
	return func() { runtime.GOMAXPROCS(n) }
}
