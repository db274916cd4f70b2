// Package health owns a cluster's active health checking: one probe
// goroutine per endpoint sends an HTTP GET, a TCP connect or a
// grpc.health.v1 Check every interval, and flips Endpoint.Healthy after
// enough consecutive failures or successes.
//
// Hosts start healthy (the endpoint's own state is kept, so a host carried
// over from a previous cluster version as unhealthy stays so until it
// passes HealthyThreshold checks). Envoy instead starts hosts added after
// cluster creation unhealthy until their first check; we trade that for
// never holding back traffic from a freshly configured cluster.
//
// The checks are off the request path, so they use the standard library
// HTTP client (one keep-alive connection per host) and a grpc-go client
// connection per host rather than the data plane's own upstream pools.
package health

import (
	"context"
	"crypto/tls"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
)

// Kind is the probe protocol.
type Kind int

const (
	HTTP Kind = iota
	TCP
	GRPC
)

func (k Kind) String() string {
	switch k {
	case HTTP:
		return "http"
	case TCP:
		return "tcp"
	case GRPC:
		return "grpc"
	}
	return "unknown"
}

// StatusRange is a half-open range [Start, End) of HTTP status codes, as
// Envoy's expected_statuses Int64Range.
type StatusRange struct{ Start, End int }

// Config is one cluster's health check. Zero fields take the defaults
// noted.
type Config struct {
	Kind Kind
	// Path is the HTTP request path. Default "/".
	Path string
	// Host is the HTTP Host header (the gRPC :authority). Default: the
	// endpoint's address.
	Host string
	// ExpectedStatuses are the HTTP statuses counted healthy. Default
	// [200, 201): 200 only, Envoy's default, so that an xDS cluster means the
	// same thing here as in Envoy (docs/config.md documents it).
	ExpectedStatuses []StatusRange
	// GRPCService is the service name sent in the health Check request;
	// empty asks about the server as a whole.
	GRPCService string
	// Interval between checks of a host. Default 5s.
	Interval time.Duration
	// Timeout of one check. Default 1s.
	Timeout time.Duration
	// UnhealthyThreshold and HealthyThreshold are the consecutive failures
	// (successes) that flip a host. Default 1 each.
	UnhealthyThreshold int
	HealthyThreshold   int
	// Jitter adds a random [0, Jitter) to each interval, and delays each
	// host's first check by as much, so checks of many hosts spread out.
	Jitter time.Duration
	// TLS, when set, wraps every probe in TLS (HTTPS, gRPC over TLS, or a
	// TCP connect plus handshake).
	TLS *tls.Config
	// HTTP2 sends HTTP checks over HTTP/2 (Envoy's codec_client_type
	// HTTP2): h2 with TLS, cleartext h2 with prior knowledge without. gRPC
	// checks always use HTTP/2.
	HTTP2 bool
	// Dial opens probe connections; nil uses net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (c Config) withDefaults() Config {
	if c.Path == "" {
		c.Path = "/"
	}
	if len(c.ExpectedStatuses) == 0 {
		c.ExpectedStatuses = []StatusRange{{Start: 200, End: 201}}
	}
	if c.Interval <= 0 {
		c.Interval = 5 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = time.Second
	}
	c.UnhealthyThreshold = max(c.UnhealthyThreshold, 1)
	c.HealthyThreshold = max(c.HealthyThreshold, 1)
	if c.Dial == nil {
		var d net.Dialer
		c.Dial = d.DialContext
	}
	return c
}

func (c *Config) expected(code int) bool {
	for _, r := range c.ExpectedStatuses {
		if code >= r.Start && code < r.End {
			return true
		}
	}
	return false
}

// EndpointStatus is one host's health-check state, for the admin page.
type EndpointStatus struct {
	Address              string        `json:"address"`
	Healthy              bool          `json:"healthy"`
	Checks               uint64        `json:"checks"`
	ConsecutiveFailures  int           `json:"consecutive_failures"`
	ConsecutiveSuccesses int           `json:"consecutive_successes"`
	LastCheck            time.Time     `json:"last_check,omitzero"`
	LastLatency          time.Duration `json:"last_latency_ns,omitempty"`
	// LastError is why the last check failed; empty when it passed.
	LastError string `json:"last_error,omitempty"`
}

// Checker runs the health checks of one cluster.
type Checker struct {
	cfg      Config
	onChange func(ep *endpoint.Endpoint, healthy bool)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	stop   sync.Once

	mu     sync.Mutex
	probes map[string]*probe // by address
	order  []string          // addresses in the order last given
}

// probe is the checking of one host. It outlives Update as long as its
// address stays.
type probe struct {
	ep     atomic.Pointer[endpoint.Endpoint]
	cancel context.CancelFunc
	check  checkFunc

	mu     sync.Mutex
	status EndpointStatus
}

// Start begins checking eps until ctx ends or Stop is called. onChange (may
// be nil) is called after a host flips; it runs on that host's probe
// goroutine, so calls for different hosts may be concurrent, and it should
// not block.
func Start(ctx context.Context, cfg Config, eps []*endpoint.Endpoint, onChange func(ep *endpoint.Endpoint, healthy bool)) *Checker {
	c := &Checker{cfg: cfg.withDefaults(), onChange: onChange, probes: map[string]*probe{}}
	c.ctx, c.cancel = context.WithCancel(ctx)
	c.Update(eps)
	return c
}

// Stop ends all probes and waits for their goroutines. It is safe to call
// more than once.
func (c *Checker) Stop() {
	c.stop.Do(func() {
		c.mu.Lock()
		c.cancel()
		c.mu.Unlock()
		c.wg.Wait()
	})
}

// Update sets the hosts to check. A host whose address stays keeps its
// probe, counters and connection (its *Endpoint may be a new one, as after
// a weight change); removed hosts' probes stop; new hosts start healthy as
// their Endpoint says. Update after Stop does nothing.
func (c *Checker) Update(eps []*endpoint.Endpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx.Err() != nil {
		return
	}
	keep := make(map[string]*probe, len(eps))
	order := make([]string, 0, len(eps))
	for _, e := range eps {
		if _, dup := keep[e.Address]; dup {
			continue
		}
		p := c.probes[e.Address]
		if p == nil {
			p = c.startProbe(e)
		} else {
			p.ep.Store(e)
		}
		keep[e.Address] = p
		order = append(order, e.Address)
	}
	for addr, p := range c.probes {
		if keep[addr] == nil {
			p.cancel()
		}
	}
	c.probes, c.order = keep, order
}

// Status returns each host's state, in the order of the last Start or
// Update.
func (c *Checker) Status() []EndpointStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]EndpointStatus, 0, len(c.order))
	for _, addr := range c.order {
		p := c.probes[addr]
		p.mu.Lock()
		st := p.status
		p.mu.Unlock()
		st.Healthy = p.ep.Load().Healthy()
		out = append(out, st)
	}
	return out
}

// startProbe launches the probe goroutine for e; c.mu is held.
func (c *Checker) startProbe(e *endpoint.Endpoint) *probe {
	ctx, cancel := context.WithCancel(c.ctx)
	p := &probe{cancel: cancel}
	p.ep.Store(e)
	p.status.Address = e.Address
	check, closeFn := c.newCheck(e.Address)
	p.check = check
	c.wg.Go(func() {
		defer closeFn()
		c.run(ctx, p)
	})
	return p
}

// checkFunc performs one check with ctx carrying its timeout; nil error
// means healthy.
type checkFunc func(ctx context.Context) error

func (c *Checker) newCheck(addr string) (checkFunc, func()) {
	switch c.cfg.Kind {
	case TCP:
		return c.tcpCheck(addr), func() {}
	case GRPC:
		return c.grpcCheck(addr)
	default:
		return c.httpCheck(addr)
	}
}

func (c *Checker) run(ctx context.Context, p *probe) {
	t := time.NewTimer(c.jitter())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		err := p.check(cctx)
		cancel()
		if ctx.Err() != nil {
			return // stopped mid-check: not the host's fault
		}
		c.record(p, start, err)
		t.Reset(c.cfg.Interval + c.jitter())
	}
}

func (c *Checker) jitter() time.Duration {
	if c.cfg.Jitter <= 0 {
		return 0
	}
	return rand.N(c.cfg.Jitter)
}

// record applies one result to the thresholds.
func (c *Checker) record(p *probe, start time.Time, err error) {
	ep := p.ep.Load()
	p.mu.Lock()
	st := &p.status
	st.Checks++
	st.LastCheck = start
	st.LastLatency = time.Since(start)
	flipped, healthy := false, false
	if err == nil {
		st.LastError = ""
		st.ConsecutiveSuccesses++
		st.ConsecutiveFailures = 0
		if st.ConsecutiveSuccesses >= c.cfg.HealthyThreshold && !ep.Healthy() {
			flipped, healthy = ep.SetHealthy(true), true
		}
	} else {
		st.LastError = err.Error()
		st.ConsecutiveFailures++
		st.ConsecutiveSuccesses = 0
		if st.ConsecutiveFailures >= c.cfg.UnhealthyThreshold && ep.Healthy() {
			flipped = ep.SetHealthy(false)
		}
	}
	p.mu.Unlock()
	if flipped && c.onChange != nil {
		c.onChange(ep, healthy)
	}
}
