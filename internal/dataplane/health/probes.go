package health

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/omnirelay/omnirelay/internal/dataplane/secrets"
)

// userAgent identifies our checks in upstream logs, like Envoy's "Envoy/HC".
const userAgent = "OmniRelay/HC"

// maxDrain is how much of a health response body is read so that the
// connection can be reused; a larger body costs a reconnect instead.
const maxDrain = 64 << 10

// httpCheck GETs Path over a client owned by this host's probe, so its one
// keep-alive connection lives and dies with the probe.
func (c *Checker) httpCheck(addr string) (checkFunc, func()) {
	tr := &http.Transport{
		DialContext:         c.cfg.Dial,
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
		// A connection idle for several intervals is likely dead already.
		IdleConnTimeout: 3*c.cfg.Interval + c.cfg.Timeout,
	}
	scheme := "http"
	if c.cfg.TLS != nil {
		scheme = "https"
		cfg := c.cfg.TLS.Clone()
		cfg.NextProtos = []string{"http/1.1"}
		if c.cfg.HTTP2 {
			cfg.NextProtos = []string{"h2"}
		}
		// Our own TLS dial, so that a stale resumed session (the upstream
		// rotated its certificate) costs a second handshake, not a failed
		// probe.
		tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			redial := func(ctx context.Context) (net.Conn, error) { return c.cfg.Dial(ctx, network, addr) }
			nc, err := redial(ctx)
			if err != nil {
				return nil, err
			}
			return secrets.HandshakeClient(ctx, nc, cfg, redial)
		}
	}
	if c.cfg.HTTP2 {
		tr.Protocols = new(http.Protocols)
		if c.cfg.TLS != nil {
			tr.Protocols.SetHTTP2(true)
		} else {
			tr.Protocols.SetUnencryptedHTTP2(true)
		}
	}
	client := &http.Client{
		Transport: tr,
		// A redirect is an answer about health, not an instruction.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	url := scheme + "://" + addr + c.cfg.Path
	host := c.cfg.Host
	check := func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("health request %s: %w", url, err)
		}
		if host != "" {
			req.Host = host
		}
		req.Header.Set("User-Agent", userAgent)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
		resp.Body.Close()
		if !c.cfg.expected(resp.StatusCode) {
			return fmt.Errorf("unexpected status %d", resp.StatusCode)
		}
		return nil
	}
	return check, tr.CloseIdleConnections
}

// tcpCheck passes when a connection (and TLS handshake, with TLS) succeeds.
func (c *Checker) tcpCheck(addr string) checkFunc {
	return func(ctx context.Context) error {
		nc, err := c.cfg.Dial(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		if c.cfg.TLS != nil {
			redial := func(ctx context.Context) (net.Conn, error) { return c.cfg.Dial(ctx, "tcp", addr) }
			tc, err := secrets.HandshakeClient(ctx, nc, c.cfg.TLS, redial)
			if err != nil {
				return fmt.Errorf("tls handshake: %w", err)
			}
			nc = tc
		}
		return nc.Close()
	}
}

// grpcCheck calls grpc.health.v1.Health/Check over a client connection
// owned by this host's probe.
func (c *Checker) grpcCheck(addr string) (checkFunc, func()) {
	creds := insecure.NewCredentials()
	if c.cfg.TLS != nil {
		creds = credentials.NewTLS(c.cfg.TLS)
	}
	dial := c.cfg.Dial
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return dial(ctx, "tcp", a) }),
		// grpc-go's default reconnect backoff grows to two minutes; a host
		// that comes back must be seen within about an interval.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: min(c.cfg.Interval, time.Second), Multiplier: 1.6, Jitter: 0.2, MaxDelay: c.cfg.Interval},
			MinConnectTimeout: c.cfg.Timeout,
		}),
	}
	if c.cfg.Host != "" {
		opts = append(opts, grpc.WithAuthority(c.cfg.Host))
	}
	// passthrough: the address is already resolved; NewClient's default
	// resolver would look it up in DNS.
	conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return func(context.Context) error { return fmt.Errorf("grpc client for %s: %w", addr, err) }, func() {}
	}
	client := healthpb.NewHealthClient(conn)
	req := &healthpb.HealthCheckRequest{Service: c.cfg.GRPCService}
	check := func(ctx context.Context) error {
		resp, err := client.Check(ctx, req)
		if err != nil {
			return err
		}
		if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("grpc health status %s", s)
		}
		return nil
	}
	return check, func() { conn.Close() }
}
