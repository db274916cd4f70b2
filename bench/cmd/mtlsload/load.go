package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

type loadConfig struct {
	addr    string
	request []byte
	// tls is nil for plaintext.
	tls     *tls.Config
	newConn bool
	conns   int
	// warmup runs before the measured duration on the same connections, so
	// that in keepalive mode their handshakes fall outside the measurement.
	warmup, duration time.Duration
	timeout          time.Duration
	// cpu, when set, returns the CPU time of what is under test; it is
	// sampled when the measured phase starts and when the last worker
	// stops.
	cpu func() (time.Duration, error)
}

type result struct {
	// requests counts 200 responses; non200 other complete responses.
	requests, non200, errors uint64
	// dials counts connections established (TCP, and TLS when on).
	dials, resumed uint64
	firstErr       error
	// elapsed runs from the start of the measured phase until the last
	// worker stopped, so that requests/elapsed covers every request the
	// proxy served in that window.
	elapsed time.Duration
	// cpu is cfg.cpu's difference over elapsed; cpuErr why it is missing.
	cpu    time.Duration
	cpuErr error
	// version and curve are what the last TLS handshake negotiated (0: no
	// TLS).
	version uint16
	curve   tls.CurveID
}

func (r *result) add(o *result) {
	r.requests += o.requests
	r.non200 += o.non200
	r.errors += o.errors
	r.dials += o.dials
	r.resumed += o.resumed
	if r.firstErr == nil {
		r.firstErr = o.firstErr
	}
	if o.version != 0 {
		r.version, r.curve = o.version, o.curve
	}
}

// runLoad runs cfg.conns workers for cfg.warmup and then cfg.duration, or
// until ctx ends. Only what completes in the measured phase is counted,
// errors excepted (every error is reported). A worker finishes the request
// (and handshake) it is in when time is up and sends no more: ctx is not
// given the run's deadline, which would turn the handshakes in flight at
// the end into errors.
func runLoad(ctx context.Context, cfg loadConfig) (result, error) {
	measureFrom := time.Now().Add(cfg.warmup)
	end := measureFrom.Add(cfg.duration)
	// The first CPU sample is taken by a timer at measureFrom, not by a
	// worker, so that it does not wait for a response.
	cpu0 := make(chan cpuSample, 1)
	sample := func() {
		s := cpuSample{at: time.Now()}
		if cfg.cpu != nil {
			s.cpu, s.err = cfg.cpu()
		}
		cpu0 <- s
	}
	var timer *time.Timer
	if cfg.warmup <= 0 {
		sample()
	} else {
		timer = time.AfterFunc(cfg.warmup, sample)
	}
	results := make([]result, cfg.conns)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() { worker(ctx, cfg, measureFrom, end, &results[i]) })
	}
	wg.Wait()
	var total result
	for i := range results {
		total.add(&results[i])
	}
	var c1 time.Duration
	var err1 error
	if cfg.cpu != nil {
		c1, err1 = cfg.cpu()
	}
	// Workers stop after end, so the timer has fired unless ctx ended the
	// run first; once fired, its sample is on the way.
	if timer != nil && timer.Stop() {
		return total, fmt.Errorf("stopped during warm-up: %w", ctx.Err())
	}
	s0 := <-cpu0
	total.elapsed = time.Since(s0.at)
	total.cpu, total.cpuErr = c1-s0.cpu, errors.Join(s0.err, err1)
	switch {
	case total.requests > 0:
	case total.errors > 0:
		return total, fmt.Errorf("no successful request; first error: %w", total.firstErr)
	default:
		return total, errors.New("no request completed in the measured phase")
	}
	return total, nil
}

type cpuSample struct {
	at  time.Time
	cpu time.Duration
	err error
}

// worker owns one connection at a time: kept across requests in keepalive
// mode, closed after each response in newconn mode. It counts what
// completes from measureFrom on.
func worker(ctx context.Context, cfg loadConfig, measureFrom, end time.Time, r *result) {
	var (
		conn net.Conn
		br   *bufio.Reader
		// warm collects what completes before measureFrom; dropped.
		warm     result
		measured bool
	)
	closeConn := func() {
		if conn != nil {
			conn.Close()
			conn = nil
		}
	}
	defer closeConn()
	fail := func(err error) {
		r.errors++
		if r.firstErr == nil {
			r.firstErr = err
		}
		closeConn()
	}
	for ctx.Err() == nil {
		now := time.Now()
		if !now.Before(end) {
			break
		}
		counts := r
		if !measured {
			if measured = !now.Before(measureFrom); !measured {
				counts = &warm
			}
		}
		if conn == nil {
			c, err := dial(ctx, cfg, counts)
			if err != nil {
				fail(err)
				continue
			}
			conn = c
			if br == nil {
				br = bufio.NewReaderSize(conn, 4096)
			} else {
				br.Reset(conn)
			}
		}
		if _, err := conn.Write(cfg.request); err != nil {
			fail(fmt.Errorf("write request: %w", err))
			continue
		}
		status, keepAlive, err := readResponse(br)
		if err != nil {
			fail(fmt.Errorf("read response: %w", err))
			continue
		}
		if status == 200 {
			counts.requests++
		} else {
			counts.non200++
		}
		if cfg.newConn || !keepAlive {
			closeConn()
		}
	}
	if r.version == 0 {
		r.version, r.curve = warm.version, warm.curve
	}
}

// dial connects and, with TLS, completes the handshake before returning,
// so that a handshake failure is an error of its own and the negotiated
// parameters are recorded. One deadline covers the connection's whole life:
// a per-request deadline would cost timer operations on every request.
func dial(ctx context.Context, cfg loadConfig, r *result) (net.Conn, error) {
	d := net.Dialer{Timeout: cfg.timeout}
	c, err := d.DialContext(ctx, "tcp", cfg.addr)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	deadline := time.Now().Add(cfg.warmup + cfg.duration + cfg.timeout)
	if cfg.newConn {
		deadline = time.Now().Add(cfg.timeout)
	}
	if err := c.SetDeadline(deadline); err != nil {
		c.Close()
		return nil, err
	}
	if cfg.tls == nil {
		r.dials++
		return c, nil
	}
	tc := tls.Client(c, cfg.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		tc.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	cs := tc.ConnectionState()
	r.dials++
	if cs.DidResume {
		r.resumed++
	}
	r.version, r.curve = cs.Version, cs.CurveID
	return tc, nil
}
