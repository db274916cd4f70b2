package fault

import (
	"context"
	"io"
	"time"
)

// throttleSlices is how many reads a second of budget is split into, so the
// body trickles out instead of arriving in one-second bursts (Envoy uses a
// similar 1/16 s granularity).
const throttleSlices = 16

// throttledReader paces reads of r to bytesPerSec, waiting on a timer that
// ends early when ctx is done. It belongs to one stream.
type throttledReader struct {
	ctx         context.Context
	r           io.Reader
	bytesPerSec uint64
	chunk       int
	start       time.Time
	sent        uint64
	timer       *time.Timer
}

func newThrottledReader(ctx context.Context, r io.Reader, bytesPerSec uint64) *throttledReader {
	if ctx == nil {
		ctx = context.Background()
	}
	return &throttledReader{
		ctx:         ctx,
		r:           r,
		bytesPerSec: bytesPerSec,
		chunk:       int(max(bytesPerSec/throttleSlices, 1)),
	}
}

func (t *throttledReader) Read(p []byte) (int, error) {
	if t.start.IsZero() {
		t.start = time.Now()
	} else if err := t.waitForBudget(); err != nil {
		return 0, err
	}
	if len(p) > t.chunk {
		p = p[:t.chunk]
	}
	n, err := t.r.Read(p)
	t.sent += uint64(n)
	if err == io.EOF && t.timer != nil {
		t.timer.Stop()
	}
	return n, err
}

// waitForBudget sleeps until the bytes already sent are within the rate.
func (t *throttledReader) waitForBudget() error {
	due := t.start.Add(time.Duration(float64(t.sent) / float64(t.bytesPerSec) * float64(time.Second)))
	d := time.Until(due)
	if d <= 0 {
		return nil
	}
	if t.timer == nil {
		t.timer = time.NewTimer(d)
	} else {
		t.timer.Reset(d)
	}
	select {
	case <-t.timer.C:
		return nil
	case <-t.ctx.Done():
		t.timer.Stop()
		return t.ctx.Err()
	}
}
