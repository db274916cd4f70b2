package e2e

import (
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// toggleBackend is an HTTP/1.1 backend whose /healthz answer a test flips,
// optionally on a fixed address (to bring a closed port to life).
type toggleBackend struct {
	Name string
	Addr string
	Hits atomic.Int64
	Sick atomic.Bool
	// Fail makes every request (not /healthz) answer 500.
	Fail atomic.Bool
}

func startToggleBackend(t testing.TB, name, addr string) *toggleBackend {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b := &toggleBackend{Name: name, Addr: ln.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if b.Sick.Load() {
			http.Error(w, "sick", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		b.Hits.Add(1)
		w.Header().Set("x-backend", name)
		if b.Fail.Load() {
			http.Error(w, name+" failing", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return b
}

// tallyBackends sends n requests and counts them by x-backend (503s as "503").
func tallyBackends(t testing.TB, c *http.Client, url string, n int, hdr ...string) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for range n {
		resp, body := testutil.Get(t, c, url, hdr...)
		switch {
		case resp.StatusCode == 503:
			counts["503"]++
		case resp.Header.Get("x-backend") == "":
			t.Fatalf("status %d without x-backend: %q", resp.StatusCode, body)
		default:
			counts[resp.Header.Get("x-backend")]++
		}
	}
	return counts
}

const healthConfig = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    virtual_hosts:
      - name: all
        routes:
          - { match: { path_prefix: /http/ }, cluster: http-hc }
          - { match: { path_prefix: /tcp/ }, cluster: tcp-hc }
clusters:
  - name: http-hc
    endpoints: [{{h1}}, {{h2}}]
    health_check:
      http: { path: /healthz }
      interval: 100ms
      timeout: 500ms
      unhealthy_threshold: 2
      healthy_threshold: 1
  - name: tcp-hc
    endpoints: [{{t1}}, {{dead}}]
    health_check: { tcp: {}, interval: 100ms, timeout: 500ms, unhealthy_threshold: 1, healthy_threshold: 1 }
`

// TestResilienceHealthChecks proves active health checking: a host whose
// /healthz fails leaves rotation within about interval*threshold, shows as
// unhealthy on /clusters and in omnirelay_endpoint_healthy, and comes back
// when it passes again; a TCP check takes a closed port out of rotation and
// puts it back once something listens there.
func TestResilienceHealthChecks(t *testing.T) {
	h1, h2 := startToggleBackend(t, "h1", ""), startToggleBackend(t, "h2", "")
	t1 := startToggleBackend(t, "t1", "")
	dead := testutil.Addr(t)
	web := testutil.Addr(t)
	p := startProxy(t, healthConfig, map[string]string{"web": web, "h1": h1.Addr, "h2": h2.Addr, "t1": t1.Addr, "dead": dead})
	c := &http.Client{Timeout: 5 * time.Second}
	base := "http://" + web

	healthyMetric := func(cluster, addr string) float64 {
		return metricValue(t, p, "omnirelay_endpoint_healthy", "cluster", cluster, "endpoint", addr)
	}

	t.Run("http check", func(t *testing.T) {
		if got := tallyBackends(t, c, base+"/http/", 20); got["h1"] != 10 || got["h2"] != 10 {
			t.Fatalf("both healthy: %v", got)
		}
		h2.Sick.Store(true)
		start := time.Now()
		testutil.Eventually(t, 3*time.Second, 10*time.Millisecond, "h2 unhealthy on /clusters", testutil.Bool(func() bool {
			return !endpointStatus(t, p, "http-hc", h2.Addr).Healthy
		}))
		// Two failed probes 100ms apart, plus the probe timeout's worth of
		// slack for a loaded machine.
		if took := time.Since(start); took > time.Second {
			t.Fatalf("marked unhealthy after %v, want about 200ms", took)
		}
		if v := healthyMetric("http-hc", h2.Addr); v != 0 {
			t.Fatalf("omnirelay_endpoint_healthy for h2 = %v, want 0", v)
		}
		if v := healthyMetric("http-hc", h1.Addr); v != 1 {
			t.Fatalf("omnirelay_endpoint_healthy for h1 = %v, want 1", v)
		}
		before := h2.Hits.Load()
		if got := tallyBackends(t, c, base+"/http/", 20); got["h1"] != 20 {
			t.Fatalf("with h2 unhealthy: %v", got)
		}
		if h2.Hits.Load() != before {
			t.Fatal("the unhealthy host still got requests")
		}

		h2.Sick.Store(false)
		testutil.Eventually(t, 3*time.Second, 10*time.Millisecond, "h2 healthy again", testutil.Bool(func() bool {
			return endpointStatus(t, p, "http-hc", h2.Addr).Healthy && healthyMetric("http-hc", h2.Addr) == 1
		}))
		testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "traffic back on h2", testutil.Bool(func() bool {
			return tallyBackends(t, c, base+"/http/", 4)["h2"] > 0
		}))
	})

	t.Run("panic mode when every host fails its check", func(t *testing.T) {
		// As Envoy below its 50% panic threshold: rather than refuse all
		// traffic, spread it over every host.
		h1.Sick.Store(true)
		h2.Sick.Store(true)
		defer h1.Sick.Store(false)
		defer h2.Sick.Store(false)
		testutil.Eventually(t, 3*time.Second, 10*time.Millisecond, "both hosts unhealthy", testutil.Bool(func() bool {
			return !endpointStatus(t, p, "http-hc", h1.Addr).Healthy && !endpointStatus(t, p, "http-hc", h2.Addr).Healthy
		}))
		if got := tallyBackends(t, c, base+"/http/", 20); got["h1"] == 0 || got["h2"] == 0 {
			t.Fatalf("in panic mode: %v", got)
		}
	})

	t.Run("tcp check", func(t *testing.T) {
		testutil.Eventually(t, 3*time.Second, 10*time.Millisecond, "the closed port unhealthy", testutil.Bool(func() bool {
			return !endpointStatus(t, p, "tcp-hc", dead).Healthy
		}))
		if v := healthyMetric("tcp-hc", dead); v != 0 {
			t.Fatalf("omnirelay_endpoint_healthy for the closed port = %v", v)
		}
		if got := tallyBackends(t, c, base+"/tcp/", 20); got["t1"] != 20 {
			t.Fatalf("with the closed port out of rotation: %v", got)
		}
		// Something listens there now: the TCP check passes and it gets
		// traffic.
		revived := startToggleBackend(t, "revived", dead)
		testutil.Eventually(t, 3*time.Second, 10*time.Millisecond, "the revived port healthy", testutil.Bool(func() bool {
			return endpointStatus(t, p, "tcp-hc", dead).Healthy
		}))
		testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "traffic on the revived port", testutil.Bool(func() bool {
			return tallyBackends(t, c, base+"/tcp/", 4)["revived"] > 0 && revived.Hits.Load() > 0
		}))
	})
}

const outlierConfig = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    virtual_hosts:
      - name: all
        routes:
          - match: { path_prefix: /connect/ }
            cluster: od-connect
            retry: { attempts: 2, on: [connect-failure] }
          - { cluster: od }
clusters:
  - name: od
    endpoints: [{{good}}, {{bad}}]
    outlier_detection: { consecutive_5xx: 3, base_ejection_time: 500ms, interval: 10s }
  - name: od-connect
    endpoints: [{{good}}, {{dead}}]
    outlier_detection: { consecutive_5xx: 3, base_ejection_time: 10s }
`

// TestResilienceOutlierDetection proves consecutive_5xx ejection: a host
// that always answers 500 is ejected after exactly 3 of them, gets no
// traffic while ejected (and /clusters and the ejection counter say so),
// and is tried again once base_ejection_time has passed; connect failures
// eject a host the same way.
func TestResilienceOutlierDetection(t *testing.T) {
	good, bad := startToggleBackend(t, "good", ""), startToggleBackend(t, "bad", "")
	bad.Fail.Store(true)
	web := testutil.Addr(t)
	dead := testutil.Addr(t)
	p := startProxy(t, outlierConfig, map[string]string{"web": web, "good": good.Addr, "bad": bad.Addr, "dead": dead})
	c := &http.Client{Timeout: 5 * time.Second}
	url := "http://" + web + "/"

	var ejectedAt time.Time
	for i := 0; ; i++ {
		if i == 20 {
			t.Fatalf("bad host not ejected after %d requests (%d reached it)", i, bad.Hits.Load())
		}
		testutil.Get(t, c, url)
		if endpointStatus(t, p, "od", bad.Addr).Ejected {
			ejectedAt = time.Now()
			break
		}
	}
	if n := bad.Hits.Load(); n != 3 {
		t.Fatalf("ejected after %d failures, want 3", n)
	}
	if v := metricValue(t, p, "omnirelay_outlier_ejections_total", "cluster", "od"); v != 1 {
		t.Fatalf("omnirelay_outlier_ejections_total = %v, want 1", v)
	}
	// While ejected (500ms), every request goes to the good host.
	for i := 0; i < 10 && time.Since(ejectedAt) < 300*time.Millisecond; i++ {
		resp, body := testutil.Get(t, c, url)
		if resp.StatusCode != 200 || resp.Header.Get("x-backend") != "good" {
			t.Fatalf("request %d while ejected: %d %q", i, resp.StatusCode, body)
		}
	}
	if n := bad.Hits.Load(); n != 3 {
		t.Fatalf("the ejected host got %d more requests", n-3)
	}

	// After the ejection time it is back in rotation.
	testutil.Eventually(t, 3*time.Second, 10*time.Millisecond, "the ejected host back on /clusters", testutil.Bool(func() bool {
		return !endpointStatus(t, p, "od", bad.Addr).Ejected
	}))
	if took := time.Since(ejectedAt); took < 400*time.Millisecond {
		t.Fatalf("ejection lifted after %v, want 500ms", took)
	}
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "traffic on the host again", testutil.Bool(func() bool {
		testutil.Get(t, c, url)
		return bad.Hits.Load() > 3
	}))

	// Connect failures count as 5xx: a closed port is ejected after three,
	// and the retries hide them from clients meanwhile.
	before := metricValue(t, p, "omnirelay_upstream_connect_failures_total", "cluster", "od-connect")
	for i := range 20 {
		resp, body := testutil.Get(t, c, "http://"+web+"/connect/x")
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if !endpointStatus(t, p, "od-connect", dead).Ejected {
		t.Fatal("the closed port was not ejected")
	}
	if n := metricValue(t, p, "omnirelay_upstream_connect_failures_total", "cluster", "od-connect") - before; n != 3 {
		t.Fatalf("%v connect failures, want 3 before the ejection", n)
	}
}
