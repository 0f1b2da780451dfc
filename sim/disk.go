package sim

import (
	"strings"
	"syscall"
	"time"

	"github.com/basaltdb/basalt/diskio"
)

// diskInjector decides the faults of one member's simulated disk: fsync
// latency (slow, sometimes very slow) on every disk; on a faulty disk also
// failed writes, fsyncs and reads (EIO) and bit rot on WAL reads.
type diskInjector struct {
	w      *World
	rng    rng
	o      *DiskOptions
	faulty bool
	// opening is set while the log is recovered: recovery cannot tell the
	// rot of the newest synced batch from a torn write (raftlog's doc), so
	// rot and read errors are injected only into a running member, whose
	// WAL read-back checks every record.
	opening bool
	// calm is set in the liveness phase: fast, faultless.
	calm bool
	// flips counts the bits flipped so far: from the first one the disk is
	// known corrupt, and a member that finds damage fails for good.
	flips int64
}

func newDiskInjector(w *World, idx int) *diskInjector {
	return &diskInjector{
		w:      w,
		rng:    newRNG(w.opts.Seed, streamDisk+Stream(idx)),
		o:      &w.opts.Disk,
		faulty: w.opts.faulty(idx),
	}
}

// syncLatency draws one fsync's duration.
func (d *diskInjector) syncLatency() time.Duration {
	if d.calm {
		return time.Millisecond
	}
	lat := d.rng.expish(d.o.SyncMean) + 10*time.Microsecond
	if d.rng.chance(d.o.GrayPPM) {
		lat *= 100
		d.w.disturb(d.w.now, d.w.now+lat)
	}
	return lat
}

// Inject implements diskio.Injector.
func (d *diskInjector) Inject(op diskio.Op) diskio.Fault {
	var f diskio.Fault
	if op.Kind == diskio.OpSync || op.Kind == diskio.OpSyncDir {
		f.Latency = d.syncLatency()
	}
	if !d.faulty || d.calm || d.opening {
		return f
	}
	switch op.Kind {
	case diskio.OpWrite, diskio.OpSync:
		if d.rng.chance(d.o.WriteErrPPM) {
			f.Kind, f.Err = diskio.FaultError, syscall.EIO
			d.w.disturb(d.w.now, d.w.now)
		}
	case diskio.OpRead:
		switch {
		case d.rng.chance(d.o.ReadErrPPM):
			f.Kind, f.Err = diskio.FaultError, syscall.EIO
			d.w.disturb(d.w.now, d.w.now)
		case op.Len > 0 && strings.HasSuffix(op.Path, ".wal") && d.rng.chance(d.o.RotPPM):
			f.Kind, f.Bit = diskio.FaultBitFlip, int64(d.rng.intN(8*uint64(op.Len)))
			d.flips++
		}
	}
	return f
}
