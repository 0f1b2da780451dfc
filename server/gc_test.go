package server

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// gcPercent returns the current GOGC.
func gcPercent() int {
	p := debug.SetGCPercent(gcPercentMin)
	debug.SetGCPercent(p)
	return p
}

// TestTuneGC: after each collection the tuner sets GOGC so that the next
// one comes gcHeadroomBytes later (a small heap gets a GOGC far above 100,
// a 64 MiB one about 400), and stopping it restores GOGC=100.
func TestTuneGC(t *testing.T) {
	if _, set := os.LookupEnv("GOGC"); set {
		t.Skip("GOGC is set: the tuner leaves it alone")
	}
	stop := tuneGC()
	defer stop()
	if p := gcPercent(); p <= 1000 {
		t.Fatalf("GOGC is %d over a small heap; want the headroom of %d bytes", p, gcHeadroomBytes)
	}
	live := make([]byte, 64<<20)
	want := gcHeadroomBytes * 100 / len(live)
	deadline := time.Now().Add(10 * time.Second)
	for p := gcPercent(); p > want || p < want*3/4; p = gcPercent() {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC is %d with a live heap of 64 MiB, want about %d", p, want)
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	runtime.KeepAlive(live)
	stop()
	runtime.GC()
	if p := gcPercent(); p != gcPercentMin {
		t.Fatalf("GOGC is %d after stop, want %d", p, gcPercentMin)
	}
}
