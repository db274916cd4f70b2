package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// loadConfig is one open-loop run.
type loadConfig struct {
	addr     string // host:port to dial
	request  []byte // one complete HTTP/1.1 request
	head     bool   // request method is HEAD: responses have no body
	rate     float64
	warmup   time.Duration // sent on schedule but not recorded
	duration time.Duration // recorded
	conns    int
	timeout  time.Duration // per request, counted from its intended send time
	spin     time.Duration // wake this early and busy-wait the rest, to cut wake-up lag
}

func (c *loadConfig) validate() error {
	switch {
	case c.rate <= 0 || c.rate > 1e6:
		return fmt.Errorf("rate %v: want 0 < rate <= 1e6 requests/s", c.rate)
	case c.duration <= 0:
		return fmt.Errorf("duration %v: must be positive", c.duration)
	case c.warmup < 0:
		return fmt.Errorf("warmup %v: must not be negative", c.warmup)
	case c.conns <= 0:
		return fmt.Errorf("conns %d: must be positive", c.conns)
	case c.timeout <= 0:
		return fmt.Errorf("timeout %v: must be positive", c.timeout)
	case c.spin < 0:
		return fmt.Errorf("spin %v: must not be negative", c.spin)
	}
	return nil
}

// loadResult covers the recorded phase only.
type loadResult struct {
	hist      histogram // latency of successful requests from intended send time
	sent      int64     // requests scheduled in the recorded phase
	ok        int64     // 2xx responses
	non2xx    int64
	errs      int64 // transport errors and timeouts
	firstErr  error
	elapsed   time.Duration // from the first recorded send time to the last completion
	dispatch  histogram     // how late the scheduler handed requests out
	achieved  float64       // ok+non2xx per second of elapsed
	scheduled float64       // the configured rate, for the report
}

// job is one request: when it should have been sent, and whether it counts.
type job struct {
	intended time.Time
	record   bool
}

// runLoad sends requests at a constant rate regardless of how fast responses
// come back (open loop), so a stall in the server shows up as latency of
// every request scheduled during it instead of as fewer requests sent: the
// coordinated-omission correction. Latency is measured from each request's
// intended send time, which is derived from the schedule alone.
func runLoad(ctx context.Context, cfg loadConfig) (*loadResult, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	interval := time.Duration(float64(time.Second) / cfg.rate)
	total := int64((cfg.warmup + cfg.duration) / interval)
	warmupN := int64(cfg.warmup / interval)
	// A queue long enough that the scheduler never blocks on a stalled
	// server for the timeout's worth of requests; if it does block, the
	// intended times still carry the delay into the latencies.
	queue := make(chan job, min(max(int64(cfg.rate*cfg.timeout.Seconds()), 1024), 1<<20))

	p, err := newPacer(cfg.spin)
	if err != nil {
		return nil, err
	}
	defer p.close()

	workers := make([]*worker, cfg.conns)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{cfg: &cfg}
		workers[i] = w
		wg.Go(func() { w.run(ctx, queue) })
	}

	res := &loadResult{scheduled: cfg.rate, sent: total - warmupN}
	start := time.Now().Add(10 * time.Millisecond)
	recordStart := start.Add(time.Duration(warmupN) * interval)
	var schedErr error
schedule:
	for i := range total {
		intended := start.Add(time.Duration(i) * interval)
		if err := p.wait(ctx, intended); err != nil {
			schedErr = err
			break
		}
		rec := i >= warmupN
		if rec {
			res.dispatch.record(time.Since(intended))
		}
		select {
		case queue <- job{intended: intended, record: rec}:
		case <-ctx.Done():
			schedErr = ctx.Err()
			break schedule
		}
	}
	close(queue)
	wg.Wait()

	var last time.Time
	for _, w := range workers {
		res.hist.merge(&w.hist)
		res.ok += w.ok
		res.non2xx += w.non2xx
		res.errs += w.errs
		if res.firstErr == nil {
			res.firstErr = w.firstErr
		}
		if w.last.After(last) {
			last = w.last
		}
	}
	if schedErr != nil {
		return res, fmt.Errorf("load interrupted: %w", schedErr)
	}
	res.elapsed = last.Sub(recordStart)
	if res.elapsed > 0 {
		res.achieved = float64(res.ok+res.non2xx) / res.elapsed.Seconds()
	}
	return res, nil
}

// worker owns one connection at a time and the counters for the requests it
// sent; it is read only after its goroutine has returned.
type worker struct {
	cfg  *loadConfig
	conn net.Conn
	br   *bufio.Reader

	hist             histogram
	ok, non2xx, errs int64
	firstErr         error
	last             time.Time
}

func (w *worker) run(ctx context.Context, queue <-chan job) {
	defer w.closeConn()
	for j := range queue {
		if ctx.Err() != nil {
			continue // drain without sending: the run is being abandoned
		}
		status, err := w.do(ctx, j.intended)
		now := time.Now()
		if !j.record {
			continue
		}
		w.last = now
		switch {
		case err != nil:
			w.errs++
			if w.firstErr == nil {
				w.firstErr = err
			}
		case status >= 200 && status < 300:
			w.ok++
			w.hist.record(now.Sub(j.intended))
		default:
			w.non2xx++
			w.hist.record(now.Sub(j.intended))
		}
	}
}

func (w *worker) do(ctx context.Context, intended time.Time) (int, error) {
	deadline := intended.Add(w.cfg.timeout)
	if w.conn == nil {
		d := net.Dialer{Deadline: deadline}
		c, err := d.DialContext(ctx, "tcp", w.cfg.addr)
		if err != nil {
			return 0, fmt.Errorf("dial %s: %w", w.cfg.addr, err)
		}
		w.conn = c
		if w.br == nil {
			w.br = bufio.NewReaderSize(c, 16<<10)
		} else {
			w.br.Reset(c)
		}
	}
	if err := w.conn.SetDeadline(deadline); err != nil {
		w.closeConn()
		return 0, fmt.Errorf("set deadline: %w", err)
	}
	if _, err := w.conn.Write(w.cfg.request); err != nil {
		w.closeConn()
		return 0, fmt.Errorf("write request: %w", timeoutErr(err))
	}
	status, keepAlive, err := readResponse(w.br, w.cfg.head)
	if err != nil {
		w.closeConn()
		return 0, fmt.Errorf("read response: %w", timeoutErr(err))
	}
	if !keepAlive {
		w.closeConn()
	}
	return status, nil
}

var errTimeout = errors.New("request timed out")

func timeoutErr(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w: %w", errTimeout, err)
	}
	return err
}

func (w *worker) closeConn() {
	if w.conn != nil {
		w.conn.Close()
		w.conn = nil
	}
}
