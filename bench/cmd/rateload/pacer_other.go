//go:build !linux

package main

import (
	"context"
	"time"
)

// pacer falls back to a runtime timer off Linux; its lag (often most of a
// millisecond) shows in the report's scheduler-lag line and in latencies.
type pacer struct{ t *time.Timer }

func newPacer() (*pacer, error) { return &pacer{t: time.NewTimer(time.Hour)}, nil }

func (p *pacer) wait(ctx context.Context, until time.Time) error {
	d := time.Until(until)
	if d <= 0 {
		return ctx.Err()
	}
	p.t.Reset(d)
	select {
	case <-p.t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pacer) close() error {
	p.t.Stop()
	return nil
}
