package server

import (
	"testing"
	"time"
)

// TestFanoutPacer: the fan-out rests only once the work it reported, done at its share, would
// run more than watchFanoutBurst past now, and then until it would not; reports from several
// goroutines add up; idle time is not saved up.
func TestFanoutPacer(t *testing.T) {
	p := &fanoutPacer{coresMax: 0.5}
	t0 := time.Unix(1000, 0)
	if d := p.delay(t0); d != 0 {
		t.Fatalf("a new pacer makes the fan-out rest %v", d)
	}
	// At half a core, the burst is half as much work.
	p.charge(t0, watchFanoutBurst/2)
	if d := p.delay(t0); d != 0 {
		t.Fatalf("within the burst: rest %v", d)
	}
	// Two goroutines' work reported together adds up: 2 ms more is 4 ms past the burst.
	p.charge(t0, time.Millisecond)
	p.charge(t0, time.Millisecond)
	if d := p.delay(t0); d != 4*time.Millisecond {
		t.Fatalf("4 ms of share past the burst: rest %v, want 4ms", d)
	}
	if d := p.delay(t0.Add(4 * time.Millisecond)); d != 0 {
		t.Fatalf("the rest is over, yet %v more", d)
	}
	// A second of idleness does not buy a second of work without rest.
	later := t0.Add(time.Second)
	p.charge(later, watchFanoutBurst/2+10*time.Millisecond)
	if d := p.delay(later); d != 20*time.Millisecond {
		t.Fatalf("after idling: rest %v, want 20ms", d)
	}
}
