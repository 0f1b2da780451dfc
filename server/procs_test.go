package server

import (
	"runtime"
	"testing"

	"go.uber.org/zap"
)

// TestRaiseProcs: on one P the member takes procsMin, unless the operator chose GOMAXPROCS;
// more Ps are left alone; restoring gives back the runtime's value.
func TestRaiseProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, tc := range []struct {
		procs       int
		operatorSet bool
		want        int
	}{
		{1, false, procsMin},
		{1, true, 1},
		{procsMin, false, procsMin},
		{procsMin + 2, false, procsMin + 2},
	} {
		runtime.GOMAXPROCS(tc.procs)
		restore := raiseProcs(zap.NewNop(), tc.operatorSet)
		if got := runtime.GOMAXPROCS(0); got != tc.want {
			t.Errorf("GOMAXPROCS %d (operator set: %v): raised to %d, want %d", tc.procs, tc.operatorSet, got, tc.want)
		}
		restore()
		if got := runtime.GOMAXPROCS(0); got != tc.procs {
			t.Errorf("GOMAXPROCS %d (operator set: %v): restored to %d", tc.procs, tc.operatorSet, got)
		}
	}
}
