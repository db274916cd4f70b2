package health

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// changes records onChange calls.
type changes struct {
	mu  sync.Mutex
	log []bool
	at  []int64 // server hit count when each change happened
	hit func() int64
}

func (c *changes) record(_ *endpoint.Endpoint, healthy bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = append(c.log, healthy)
	if c.hit != nil {
		c.at = append(c.at, c.hit())
	}
}

func (c *changes) snapshot() ([]bool, []int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]bool(nil), c.log...), append([]int64(nil), c.at...)
}

// scripted is an HTTP health endpoint answering a sequence of statuses,
// then repeating the last one.
type scripted struct {
	mu       sync.Mutex
	statuses []int
	from     int64 // hits answered before statuses took over
	hits     atomic.Int64
	conns    atomic.Int64
	lastHost atomic.Value
	lastPath atomic.Value
	lastUA   atomic.Value
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := s.hits.Add(1)
	s.lastHost.Store(r.Host)
	s.lastPath.Store(r.URL.Path)
	s.lastUA.Store(r.UserAgent())
	s.mu.Lock()
	i := min(max(int(n-s.from)-1, 0), len(s.statuses)-1)
	code := s.statuses[i]
	s.mu.Unlock()
	w.WriteHeader(code)
	_, _ = w.Write([]byte("health body\n"))
}

// set scripts the answers from the next hit on.
func (s *scripted) set(codes ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.statuses, s.from = codes, s.hits.Load()
}

func newScripted(t *testing.T, codes ...int) (*scripted, *httptest.Server) {
	s := &scripted{statuses: codes}
	srv := httptest.NewUnstartedServer(s)
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return s, srv
}

func addr(srv *httptest.Server) string {
	return strings.TrimPrefix(strings.TrimPrefix(srv.URL, "http://"), "https://")
}

func fast(cfg Config) Config {
	cfg.Interval = 10 * time.Millisecond
	if cfg.Timeout == 0 {
		cfg.Timeout = 500 * time.Millisecond
	}
	return cfg
}

func TestHTTPThresholds(t *testing.T) {
	const bad, ok = 503, 200
	tests := []struct {
		name      string
		unhealthy int
		healthy   int
		script    []int
		want      []bool  // onChange calls
		wantAt    []int64 // the check (1-based) that caused each
	}{
		{
			name: "one failure flips with threshold 1", unhealthy: 1, healthy: 1,
			script: []int{ok, bad, ok}, want: []bool{false, true}, wantAt: []int64{2, 3},
		},
		{
			name: "failures must be consecutive", unhealthy: 3, healthy: 2,
			script: []int{bad, ok, bad, bad, ok, bad, bad, bad, ok, bad, ok, ok},
			want:   []bool{false, true}, wantAt: []int64{8, 12},
		},
		{
			name: "never reaches threshold", unhealthy: 2, healthy: 1,
			script: []int{bad, ok, bad, ok, bad, ok, ok},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, srv := newScripted(t, tt.script...)
			ep := endpoint.New(addr(srv), 1)
			ch := &changes{hit: s.hits.Load}
			c := Start(context.Background(), fast(Config{Kind: HTTP, UnhealthyThreshold: tt.unhealthy, HealthyThreshold: tt.healthy}), []*endpoint.Endpoint{ep}, ch.record)
			defer c.Stop()
			testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, "the script to play out", testutil.Bool(func() bool {
				st := c.Status()
				return st[0].Checks >= uint64(len(tt.script)+1)
			}))
			got, at := ch.snapshot()
			if len(got) != len(tt.want) {
				t.Fatalf("changes %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] || at[i] != tt.wantAt[i] {
					t.Fatalf("changes %v at checks %v, want %v at %v", got, at, tt.want, tt.wantAt)
				}
			}
			if !ep.Healthy() {
				t.Fatal("host unhealthy at the end of the script")
			}
		})
	}
}

func TestHTTPFlipsAndReusesConnection(t *testing.T) {
	s, srv := newScripted(t, 200)
	ep := endpoint.New(addr(srv), 1)
	ch := &changes{}
	c := Start(context.Background(), fast(Config{Kind: HTTP, Path: "/healthz", Host: "svc.internal", UnhealthyThreshold: 2, HealthyThreshold: 2}), []*endpoint.Endpoint{ep}, ch.record)
	defer c.Stop()

	testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, "a few checks", testutil.Bool(func() bool { return s.hits.Load() >= 3 }))
	s.set(503)
	testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, "host unhealthy", testutil.Bool(func() bool { return !ep.Healthy() }))
	st := c.Status()[0]
	if st.Healthy || st.ConsecutiveFailures < 2 || !strings.Contains(st.LastError, "503") {
		t.Fatalf("status after failures: %+v", st)
	}
	s.set(200)
	testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, "host healthy again", testutil.Bool(func() bool { return ep.Healthy() }))

	if got, _ := ch.snapshot(); len(got) != 2 || got[0] || !got[1] {
		t.Fatalf("changes %v, want [false true]", got)
	}
	if h := s.lastHost.Load(); h != "svc.internal" {
		t.Errorf("Host header %v", h)
	}
	if p := s.lastPath.Load(); p != "/healthz" {
		t.Errorf("path %v", p)
	}
	if ua := s.lastUA.Load(); ua != userAgent {
		t.Errorf("user agent %v", ua)
	}
	if n := s.conns.Load(); n != 1 {
		t.Errorf("%d connections for %d checks, want 1 kept alive", n, s.hits.Load())
	}
}

func TestHTTPExpectedStatuses(t *testing.T) {
	tests := []struct {
		name     string
		ranges   []StatusRange
		code     int
		wantFail bool
	}{
		{name: "default accepts 200", code: 200},
		{name: "default rejects 204 (Envoy: 200 only)", code: 204, wantFail: true},
		{name: "default rejects 301", code: 301, wantFail: true},
		{name: "default rejects 404", code: 404, wantFail: true},
		{name: "custom range includes start", ranges: []StatusRange{{Start: 200, End: 201}, {Start: 429, End: 430}}, code: 429},
		{name: "custom range excludes end", ranges: []StatusRange{{Start: 200, End: 204}}, code: 204, wantFail: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, srv := newScripted(t, tt.code)
			ep := endpoint.New(addr(srv), 1)
			c := Start(context.Background(), fast(Config{Kind: HTTP, ExpectedStatuses: tt.ranges}), []*endpoint.Endpoint{ep}, nil)
			defer c.Stop()
			testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, "two checks", testutil.Bool(func() bool { return c.Status()[0].Checks >= 2 }))
			if ep.Healthy() == tt.wantFail {
				t.Fatalf("healthy = %v for status %d (hits %d)", ep.Healthy(), tt.code, s.hits.Load())
			}
		})
	}
}

func TestHTTPTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	ep := endpoint.New(addr(srv), 1)
	c := Start(context.Background(), fast(Config{Kind: HTTP, Timeout: 20 * time.Millisecond}), []*endpoint.Endpoint{ep}, nil)
	defer c.Stop()
	testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, "timeout marks unhealthy", testutil.Bool(func() bool { return !ep.Healthy() }))
	if e := c.Status()[0].LastError; !strings.Contains(e, "deadline") {
		t.Fatalf("last error %q, want a deadline error", e)
	}
}

func TestHTTPSAndHTTP2(t *testing.T) {
	tests := []struct {
		name  string
		tls   bool
		http2 bool
	}{
		{name: "https", tls: true},
		{name: "h2 over tls", tls: true, http2: true},
		{name: "h2c prior knowledge", http2: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var proto atomic.Int32
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				proto.Store(int32(r.ProtoMajor))
			}))
			srv.Config.Protocols = new(http.Protocols)
			srv.Config.Protocols.SetHTTP1(true)
			srv.Config.Protocols.SetHTTP2(true)
			srv.Config.Protocols.SetUnencryptedHTTP2(true)
			var tlsCfg *tls.Config
			if tt.tls {
				srv.EnableHTTP2 = tt.http2
				srv.StartTLS()
				tlsCfg = &tls.Config{RootCAs: certPool(srv), ServerName: "example.com"}
			} else {
				srv.Start()
			}
			defer srv.Close()
			ep := endpoint.New(addr(srv), 1)
			ep.SetHealthy(false)
			c := Start(context.Background(), fast(Config{Kind: HTTP, TLS: tlsCfg, HTTP2: tt.http2}), []*endpoint.Endpoint{ep}, nil)
			defer c.Stop()
			testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, "healthy", testutil.Bool(func() bool { return ep.Healthy() }))
			want := int32(1)
			if tt.http2 {
				want = 2
			}
			if got := proto.Load(); got != want {
				t.Fatalf("checked over HTTP/%d, want HTTP/%d", got, want)
			}
		})
	}
}

func certPool(srv *httptest.Server) *x509.CertPool {
	return srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
}

func TestTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	serve := func(ln net.Listener) {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			nc.Close()
		}
	}
	go serve(ln)
	a := ln.Addr().String()
	ep := endpoint.New(a, 1)
	ch := &changes{}
	c := Start(context.Background(), fast(Config{Kind: TCP, UnhealthyThreshold: 2}), []*endpoint.Endpoint{ep}, ch.record)
	defer c.Stop()
	testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, "connects", testutil.Bool(func() bool { return accepted.Load() >= 2 }))
	if !ep.Healthy() {
		t.Fatal("unhealthy while listening")
	}
	ln.Close()
	testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, "unhealthy after listener closed", testutil.Bool(func() bool { return !ep.Healthy() }))

	ln2, err := net.Listen("tcp", a)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", a, err)
	}
	defer ln2.Close()
	go serve(ln2)
	testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, "healthy after listener reopened", testutil.Bool(func() bool { return ep.Healthy() }))
	if got, _ := ch.snapshot(); len(got) != 2 {
		t.Fatalf("changes %v", got)
	}
}

func TestGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := grpchealth.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(ln) }()
	defer func() { gs.Stop(); <-served }()

	tests := []struct {
		name    string
		service string
	}{
		{name: "whole server", service: ""},
		{name: "named service", service: "omnirelay.test.Echo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs.SetServingStatus(tt.service, healthpb.HealthCheckResponse_SERVING)
			ep := endpoint.New(ln.Addr().String(), 1)
			ch := &changes{}
			c := Start(context.Background(), fast(Config{Kind: GRPC, GRPCService: tt.service, HealthyThreshold: 2}), []*endpoint.Endpoint{ep}, ch.record)
			defer c.Stop()
			testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, "first checks", testutil.Bool(func() bool { return c.Status()[0].Checks >= 2 }))
			if !ep.Healthy() {
				t.Fatalf("unhealthy while SERVING: %+v", c.Status()[0])
			}
			hs.SetServingStatus(tt.service, healthpb.HealthCheckResponse_NOT_SERVING)
			testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, "unhealthy on NOT_SERVING", testutil.Bool(func() bool { return !ep.Healthy() }))
			if e := c.Status()[0].LastError; !strings.Contains(e, "NOT_SERVING") {
				t.Fatalf("last error %q", e)
			}
			hs.SetServingStatus(tt.service, healthpb.HealthCheckResponse_SERVING)
			testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, "healthy on SERVING", testutil.Bool(func() bool { return ep.Healthy() }))
			if got, _ := ch.snapshot(); len(got) != 2 || got[0] || !got[1] {
				t.Fatalf("changes %v, want [false true]", got)
			}
		})
	}

	t.Run("unknown service fails", func(t *testing.T) {
		ep := endpoint.New(ln.Addr().String(), 1)
		c := Start(context.Background(), fast(Config{Kind: GRPC, GRPCService: "no.such.Service"}), []*endpoint.Endpoint{ep}, nil)
		defer c.Stop()
		testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, "unhealthy", testutil.Bool(func() bool { return !ep.Healthy() }))
	})
}

func TestUpdateKeepsProbes(t *testing.T) {
	sa, srvA := newScripted(t, 200)
	sb, srvB := newScripted(t, 200)
	sc, srvC := newScripted(t, 200)
	a, b := endpoint.New(addr(srvA), 1), endpoint.New(addr(srvB), 1)
	c := Start(context.Background(), fast(Config{Kind: HTTP, UnhealthyThreshold: 3}), []*endpoint.Endpoint{a, b}, nil)
	defer c.Stop()

	sa.set(503)
	testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, "a to fail twice", testutil.Bool(func() bool { return c.Status()[0].ConsecutiveFailures == 2 || !a.Healthy() }))
	// a stays (as a new Endpoint, as after a weight change, carrying its
	// health); b goes; c comes.
	a2 := endpoint.New(a.Address, 5)
	a2.SetHealthy(a.Healthy())
	cc := endpoint.New(addr(srvC), 1)
	before := c.Status()[0].Checks
	c.Update([]*endpoint.Endpoint{cc, a2})

	st := c.Status()
	if len(st) != 2 || st[0].Address != cc.Address || st[1].Address != a.Address {
		t.Fatalf("status order %+v", st)
	}
	if st[1].Checks < before {
		t.Fatalf("a's counters reset by Update: %d checks, had %d", st[1].Checks, before)
	}
	testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, "a unhealthy through its kept probe", testutil.Bool(func() bool { return !a2.Healthy() }))
	testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, "c checked", testutil.Bool(func() bool { return sc.hits.Load() >= 2 }))
	if n := sa.conns.Load(); n != 1 {
		t.Errorf("a reconnected across Update: %d connections", n)
	}
	// b's probe is gone: its hit count stops growing. Wait for c to be
	// checked a few more times, then compare.
	bHits := sb.hits.Load()
	cHits := sc.hits.Load()
	testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, "more checks of c", testutil.Bool(func() bool { return sc.hits.Load() >= cHits+3 }))
	if got := sb.hits.Load(); got > bHits+1 {
		t.Fatalf("removed host still checked: %d hits, had %d", got, bHits)
	}
}

func TestStopIsFinal(t *testing.T) {
	s, srv := newScripted(t, 200)
	ep := endpoint.New(addr(srv), 1)
	c := Start(context.Background(), fast(Config{Kind: HTTP}), []*endpoint.Endpoint{ep}, nil)
	testutil.Eventually(t, 5*time.Second, 2*time.Millisecond, "a check", testutil.Bool(func() bool { return s.hits.Load() >= 1 }))
	c.Stop()
	c.Stop()
	c.Update([]*endpoint.Endpoint{endpoint.New("127.0.0.1:1", 1)})
	if n := len(c.Status()); n != 1 {
		t.Fatalf("Update after Stop changed the hosts: %d", n)
	}
}

func TestParentContextStops(t *testing.T) {
	_, srv := newScripted(t, 200)
	ctx, cancel := context.WithCancel(context.Background())
	c := Start(ctx, fast(Config{Kind: HTTP}), []*endpoint.Endpoint{endpoint.New(addr(srv), 1)}, nil)
	cancel()
	done := make(chan struct{})
	go func() { c.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return after the parent context ended")
	}
}
