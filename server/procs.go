package server

import (
	"os"
	"runtime"

	"go.uber.org/zap"
)

// procsMin is the fewest Ps (GOMAXPROCS) a member runs with, even on one core. The loop waits
// for each WAL fdatasync (about half its time under load) inside a system call, holding its P
// until the runtime's monitor takes the P back for the request goroutines; once the call
// returns, the loop has no P and waits in the global run queue behind them. With a single P
// every fsync stalled the whole member: pinned to one core, put/200 gave 3.9k requests/s with
// one P and 12.4k with two (etcd v3.7.3 on the same core: 5.9k with one, 7.3k with two). With
// two cores or more the runtime's own choice is kept: a third P on two cores measured within
// noise for put/200 and worse for put/1.
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
