package server

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// Limits of the garbage collector's tuning.
const (
	// gcHeadroomBytes is the least the heap may grow past the live heap
	// before the next collection. The store lives in the heap, and with
	// Go's default (GOGC=100: grow by the live heap) a small or medium
	// store was collected so often that the collector took about a sixth of
	// the CPU under put/200; with this headroom, about a twentieth. A large
	// store keeps GOGC=100, so memory grows by at most this much.
	gcHeadroomBytes = 256 << 20
	// gcPercentMin is the GOGC the tuning never goes below: Go's default.
	gcPercentMin = 100
	// gcLiveBytesMin is the live heap assumed before the first collection
	// has measured it: Go's minimum heap goal at GOGC=100.
	gcLiveBytesMin = 4 << 20
)

const liveHeapMetric = "/gc/heap/live:bytes"

// gcTuner sets GOGC after each collection so that the next one comes no
// sooner than gcHeadroomBytes of allocation later.
type gcTuner struct {
	mu      sync.Mutex
	stopped bool
	// percent is the GOGC last set.
	percent int
	sample  []metrics.Sample
}

// gcCycle is garbage whose finalizer runs once per collection. It holds
// a pointer so that it is not batched into a tiny allocation block, whose
// finalizers may never run.
type gcCycle struct{ _ *gcTuner }

// tuneGC starts the tuning unless the operator set GOGC, and returns the
// function that stops it and restores the default.
func tuneGC() (stop func()) {
	if _, set := os.LookupEnv("GOGC"); set {
		return func() {}
	}
	t := &gcTuner{percent: gcPercentMin, sample: []metrics.Sample{{Name: liveHeapMetric}}}
	t.collected(nil)
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		t.stopped = true
		debug.SetGCPercent(gcPercentMin)
	}
}

// collected runs on the finalizer goroutine after a collection.
func (t *gcTuner) collected(*gcCycle) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	metrics.Read(t.sample)
	live := uint64(gcLiveBytesMin)
	if v := t.sample[0].Value; v.Kind() == metrics.KindUint64 {
		live = max(live, v.Uint64())
	}
	if percent := max(gcPercentMin, int(gcHeadroomBytes*100/live)); percent != t.percent {
		debug.SetGCPercent(percent)
		t.percent = percent
	}
	runtime.SetFinalizer(&gcCycle{}, t.collected)
}
