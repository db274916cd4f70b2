package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"
)

type loadConfig struct {
	addr    string
	request []byte
	// tls is nil for plaintext.
	tls      *tls.Config
	newConn  bool
	conns    int
	duration time.Duration
	timeout  time.Duration
}

type result struct {
	// requests counts 200 responses; non200 other complete responses.
	requests, non200, errors uint64
	// dials counts connections established (TCP, and TLS when on).
	dials, resumed uint64
	firstErr       error
	// elapsed runs from the start until the last worker stopped, so that
	// requests/elapsed covers every request the proxy served in the run.
	elapsed time.Duration
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

// runLoad runs cfg.conns workers until cfg.duration has passed or ctx ends.
// A worker finishes the request (and handshake) it is in when time is up
// and sends no more: ctx is not given the run's deadline, which would turn
// the handshakes in flight at the end into errors.
func runLoad(ctx context.Context, cfg loadConfig) (result, error) {
	start := time.Now()
	end := start.Add(cfg.duration)
	results := make([]result, cfg.conns)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() { worker(ctx, cfg, end, &results[i]) })
	}
	wg.Wait()
	var total result
	for i := range results {
		total.add(&results[i])
	}
	total.elapsed = time.Since(start)
	if total.requests == 0 && total.errors > 0 {
		return total, fmt.Errorf("no successful request; first error: %w", total.firstErr)
	}
	return total, nil
}

// worker owns one connection at a time: kept across requests in keepalive
// mode, closed after each response in newconn mode.
func worker(ctx context.Context, cfg loadConfig, end time.Time, r *result) {
	var (
		conn net.Conn
		br   *bufio.Reader
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
	for time.Now().Before(end) && ctx.Err() == nil {
		if conn == nil {
			c, err := dial(ctx, cfg, r)
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
			r.requests++
		} else {
			r.non200++
		}
		if cfg.newConn || !keepAlive {
			closeConn()
		}
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
	deadline := time.Now().Add(cfg.duration + cfg.timeout)
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
