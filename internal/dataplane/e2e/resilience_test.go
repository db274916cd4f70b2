package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// flaky is a backend whose failures the request scripts: x-id names the
// logical request (its attempts are counted and recorded), x-fail says how
// many first attempts fail, x-fail-mode how ("status" by default, "reset",
// "grpc", "sleep"), x-fail-status with what (503, or gRPC status 14).
type flaky struct {
	*backend
	mu       sync.Mutex
	attempts map[string][]flakyAttempt
}

type flakyAttempt struct {
	at   time.Time
	body string
}

func startFlaky(t testing.TB, name string) *flaky {
	f := &flaky{attempts: map[string][]flakyAttempt{}}
	f.backend = startBackend(t, name, f.serve)
	return f
}

func (f *flaky) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	id := r.Header.Get("x-id")
	f.mu.Lock()
	f.attempts[id] = append(f.attempts[id], flakyAttempt{at: time.Now(), body: string(body)})
	n := len(f.attempts[id])
	f.mu.Unlock()
	failN, _ := strconv.Atoi(r.Header.Get("x-fail"))
	mode := r.Header.Get("x-fail-mode")
	failing := n <= failN
	switch {
	case mode == "grpc":
		status := "0"
		if failing {
			status = r.Header.Get("x-fail-status")
			if status == "" {
				status = "14"
			}
		}
		// Trailers-only: grpc-status in the only HEADERS frame.
		w.Header().Set("content-type", "application/grpc")
		w.Header().Set("grpc-status", status)
		w.WriteHeader(200)
	case !failing:
		fmt.Fprintf(w, "%s ok after %d attempts", f.Name, n)
	case mode == "reset":
		hj, ok := w.(http.Hijacker)
		if !ok {
			http.Error(w, "cannot hijack", 500)
			return
		}
		c, _, err := hj.Hijack()
		if err == nil {
			c.Close()
		}
	case mode == "sleep":
		d, _ := time.ParseDuration(r.Header.Get("x-sleep"))
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, "%s slept", f.Name)
	default:
		status, _ := strconv.Atoi(r.Header.Get("x-fail-status"))
		if status == 0 {
			status = 503
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, "%s fail %d", f.Name, n)
	}
}

func (f *flaky) tries(id string) []flakyAttempt {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]flakyAttempt(nil), f.attempts[id]...)
}

// metricValue sums the samples of a metric family whose labels include the
// given name/value pairs, read from the admin /metrics endpoint.
func metricValue(t testing.TB, p *proxy, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(p.AdminURL("/metrics"))
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		lbls := ""
		if rest[0] == '{' {
			end := strings.IndexByte(rest, '}')
			lbls, rest = rest[1:end], rest[end+1:]
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(lbls, labels[i]+`="`+labels[i+1]+`"`) {
				match = false
			}
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// endpointState is one host of the admin /clusters page.
type endpointState struct {
	Address string `json:"address"`
	Healthy bool   `json:"healthy"`
	Ejected bool   `json:"ejected"`
}

func endpointStatus(t testing.TB, p *proxy, cluster, addr string) endpointState {
	t.Helper()
	resp, err := http.Get(p.AdminURL("/clusters"))
	if err != nil {
		t.Fatalf("clusters: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		Clusters []struct {
			Name      string          `json:"name"`
			Endpoints []endpointState `json:"endpoints"`
		} `json:"clusters"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("clusters: %v", err)
	}
	for _, c := range out.Clusters {
		if c.Name != cluster {
			continue
		}
		for _, e := range c.Endpoints {
			if e.Address == addr {
				return e
			}
		}
	}
	t.Fatalf("cluster %q has no endpoint %s in /clusters", cluster, addr)
	return endpointState{}
}

// reqID returns an id unique in the test binary for x-id.
func reqID(t testing.TB, n *atomic.Int64) string {
	return fmt.Sprintf("%s-%d", t.Name(), n.Add(1))
}

const retriesConfig = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    virtual_hosts:
      - name: all
        routes:
          - match: { path_prefix: /r5xx/ }
            cluster: flaky
            retry: { attempts: 3, on: [5xx], backoff: { base: 2ms } }
          - match: { path_prefix: /codes/ }
            cluster: flaky
            retry: { attempts: 3, retriable_status_codes: [418, 429], backoff: { base: 2ms } }
          - match: { path_prefix: /gateway/ }
            cluster: flaky
            retry: { attempts: 2, on: [gateway-error, retriable-4xx], backoff: { base: 2ms } }
          - match: { path_prefix: /default/ }
            cluster: flaky
            retry: { attempts: 3 }
          - match: { path_prefix: /noretry/ }
            cluster: flaky
          - match: { path_prefix: /reset/ }
            cluster: flaky
            retry: { attempts: 2, on: [reset] }
          - match: { path_prefix: /backoff/ }
            cluster: flaky
            retry: { attempts: 4, on: [5xx], backoff: { base: 40ms, max: 1s } }
          - match: { path_prefix: /capped/ }
            cluster: flaky
            retry: { attempts: 6, on: [5xx], backoff: { base: 25ms, max: 50ms } }
          - match: { path_prefix: /grpc/ }
            cluster: flaky-h2
            retry: { attempts: 3, on: [unavailable], backoff: { base: 2ms } }
          - match: { path_prefix: /connect/ }
            cluster: half-dead
            retry: { attempts: 2, on: [connect-failure] }
          - match: { path_prefix: /connect-none/ }
            cluster: half-dead
clusters:
  - name: flaky
    endpoints: [{{flaky}}]
  - name: flaky-h2
    protocol: h2c
    endpoints: [{{flaky}}]
  - name: half-dead
    endpoints: [{{dead}}, {{good}}]
`

// TestResilienceRetries proves the retry policy end to end: which failures
// are retried (statuses, resets, connect failures, gRPC statuses), that the
// attempt limit holds, that a POST body is re-sent identically, and that
// backoff waits grow and respect their cap.
func TestResilienceRetries(t *testing.T) {
	f := startFlaky(t, "flaky")
	good := startBackend(t, "good", nil)
	dead := testutil.Addr(t) // reserved and closed: connections are refused
	web := testutil.Addr(t)
	p := startProxy(t, retriesConfig, map[string]string{"web": web, "flaky": f.Addr, "dead": dead, "good": good.Addr})
	c := &http.Client{Timeout: 5 * time.Second}
	base := "http://" + web
	var ids atomic.Int64

	statusCases := []struct {
		name, path  string
		fail        int
		failStatus  string
		wantStatus  int
		wantAttempt int
	}{
		{name: "5xx retried until success", path: "/r5xx/", fail: 2, wantStatus: 200, wantAttempt: 3},
		{name: "attempts limit", path: "/r5xx/", fail: 10, wantStatus: 503, wantAttempt: 3},
		{name: "500 is a 5xx", path: "/r5xx/", fail: 1, failStatus: "500", wantStatus: 200, wantAttempt: 2},
		{name: "4xx not retried on 5xx", path: "/r5xx/", fail: 1, failStatus: "404", wantStatus: 404, wantAttempt: 1},
		{name: "retriable status code", path: "/codes/", fail: 2, failStatus: "418", wantStatus: 200, wantAttempt: 3},
		{name: "other retriable status code", path: "/codes/", fail: 1, failStatus: "429", wantStatus: 200, wantAttempt: 2},
		{name: "status not in the list", path: "/codes/", fail: 1, failStatus: "503", wantStatus: 503, wantAttempt: 1},
		{name: "gateway-error retries 502", path: "/gateway/", fail: 1, failStatus: "502", wantStatus: 200, wantAttempt: 2},
		{name: "gateway-error retries 504", path: "/gateway/", fail: 1, failStatus: "504", wantStatus: 200, wantAttempt: 2},
		{name: "gateway-error does not retry 500", path: "/gateway/", fail: 1, failStatus: "500", wantStatus: 500, wantAttempt: 1},
		{name: "retriable-4xx retries 409", path: "/gateway/", fail: 1, failStatus: "409", wantStatus: 200, wantAttempt: 2},
		{name: "retriable-4xx does not retry 400", path: "/gateway/", fail: 1, failStatus: "400", wantStatus: 400, wantAttempt: 1},
		{name: "default conditions do not retry 5xx", path: "/default/", fail: 1, wantStatus: 503, wantAttempt: 1},
		{name: "no policy no retry", path: "/noretry/", fail: 1, wantStatus: 503, wantAttempt: 1},
	}
	for _, tc := range statusCases {
		t.Run(tc.name, func(t *testing.T) {
			id := reqID(t, &ids)
			resp, body := testutil.Get(t, c, base+tc.path+"x", "x-id", id, "x-fail", strconv.Itoa(tc.fail), "x-fail-status", tc.failStatus)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tc.wantStatus, body)
			}
			if n := len(f.tries(id)); n != tc.wantAttempt {
				t.Fatalf("backend saw %d attempts, want %d", n, tc.wantAttempt)
			}
		})
	}

	t.Run("reset retried", func(t *testing.T) {
		id := reqID(t, &ids)
		resp, body := testutil.Get(t, c, base+"/reset/x", "x-id", id, "x-fail", "1", "x-fail-mode", "reset")
		if resp.StatusCode != 200 || len(f.tries(id)) != 2 {
			t.Fatalf("status %d (body %q), %d attempts; want 200 after 2", resp.StatusCode, body, len(f.tries(id)))
		}
	})
	t.Run("reset not retried without reset", func(t *testing.T) {
		id := reqID(t, &ids)
		resp, body := sendReq(t, c, "POST", base+"/noretry/x", "data", "x-id", id, "x-fail", "1", "x-fail-mode", "reset")
		if resp.StatusCode != 503 || !strings.Contains(body, "reset") {
			t.Fatalf("status %d body %q, want 503 upstream reset", resp.StatusCode, body)
		}
		if n := len(f.tries(id)); n != 1 {
			t.Fatalf("backend saw %d attempts, want 1", n)
		}
	})
	// A reset on a pooled connection before any response byte looks like the
	// upstream closing an idle connection: the pool resends once on a fresh
	// connection, but only requests that are safe to repeat.
	staleCases := []struct {
		name, method  string
		status, tries int
	}{
		{name: "GET reset on a reused connection is resent", method: "GET", status: 200, tries: 2},
		{name: "bodyless POST reset on a reused connection is not resent", method: "POST", status: 503, tries: 1},
	}
	for _, tc := range staleCases {
		t.Run(tc.name, func(t *testing.T) {
			// Leave an idle pooled connection for the next request to reuse.
			if resp, _ := testutil.Get(t, c, base+"/noretry/warm"); resp.StatusCode != 200 {
				t.Fatalf("warm-up: %d", resp.StatusCode)
			}
			id := reqID(t, &ids)
			resp, body := sendReq(t, c, tc.method, base+"/noretry/x", "", "x-id", id, "x-fail", "1", "x-fail-mode", "reset")
			if resp.StatusCode != tc.status || len(f.tries(id)) != tc.tries {
				t.Fatalf("status %d (body %q) after %d attempts, want %d after %d",
					resp.StatusCode, body, len(f.tries(id)), tc.status, tc.tries)
			}
		})
	}

	t.Run("POST body re-sent identically", func(t *testing.T) {
		payload := strings.Repeat("0123456789abcdef", 1000) + "end"
		id := reqID(t, &ids)
		resp, body := sendReq(t, c, "POST", base+"/r5xx/x", payload, "x-id", id, "x-fail", "2")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
		tries := f.tries(id)
		if len(tries) != 3 {
			t.Fatalf("%d attempts, want 3", len(tries))
		}
		for i, a := range tries {
			if a.body != payload {
				t.Fatalf("attempt %d got %d bytes, want the %d sent", i+1, len(a.body), len(payload))
			}
		}
	})
	t.Run("POST body re-sent identically over HTTP/2", func(t *testing.T) {
		payload := strings.Repeat("h2-body-", 3000)
		id := reqID(t, &ids)
		resp, body := sendReq(t, testutil.H2CClient(), "POST", base+"/r5xx/x", payload, "x-id", id, "x-fail", "2")
		tries := f.tries(id)
		if resp.StatusCode != 200 || len(tries) != 3 {
			t.Fatalf("status %d (body %q) after %d attempts, want 200 after 3", resp.StatusCode, body, len(tries))
		}
		for i, a := range tries {
			if a.body != payload {
				t.Fatalf("attempt %d got %d bytes, want the %d sent", i+1, len(a.body), len(payload))
			}
		}
	})
	t.Run("POST body over the replay limit is not retried", func(t *testing.T) {
		payload := strings.Repeat("x", 100<<10)
		id := reqID(t, &ids)
		resp, body := sendReq(t, c, "POST", base+"/r5xx/x", payload, "x-id", id, "x-fail", "2")
		tries := f.tries(id)
		if resp.StatusCode != 503 || len(tries) != 1 {
			t.Fatalf("status %d (body %q) after %d attempts; want the first 503", resp.StatusCode, body, len(tries))
		}
		if len(tries[0].body) != len(payload) {
			t.Fatalf("backend got %d bytes, want %d", len(tries[0].body), len(payload))
		}
	})

	t.Run("connect failure retried on the next host", func(t *testing.T) {
		before := metricValue(t, p, "omnirelay_upstream_connect_failures_total", "cluster", "half-dead")
		for i := range 10 {
			resp, body := testutil.Get(t, c, base+"/connect/x")
			if resp.StatusCode != 200 || resp.Header.Get("x-backend") != "good" {
				t.Fatalf("request %d: status %d body %q", i, resp.StatusCode, body)
			}
		}
		if after := metricValue(t, p, "omnirelay_upstream_connect_failures_total", "cluster", "half-dead"); after < before+5 {
			t.Fatalf("connect failures %v -> %v: the dead host was not tried", before, after)
		}
	})
	t.Run("connect failure without retry", func(t *testing.T) {
		failed := 0
		for range 10 {
			resp, body := testutil.Get(t, c, base+"/connect-none/x")
			if resp.StatusCode == 503 {
				if !strings.Contains(body, "connect") {
					t.Fatalf("503 body %q", body)
				}
				failed++
			}
		}
		if failed == 0 || failed == 10 {
			t.Fatalf("%d of 10 failed; round robin over a dead and a good host should fail half", failed)
		}
	})

	grpcCases := []struct {
		name, failStatus, want string
		attempts               int
	}{
		{name: "unavailable retried", failStatus: "14", want: "0", attempts: 3},
		{name: "internal not retried", failStatus: "13", want: "13", attempts: 1},
	}
	for _, tc := range grpcCases {
		t.Run("grpc "+tc.name, func(t *testing.T) {
			id := reqID(t, &ids)
			resp, body := sendReq(t, testutil.H2CClient(), "POST", base+"/grpc/pkg.Svc/Call", "\x00\x00\x00\x00\x00",
				"content-type", "application/grpc", "te", "trailers",
				"x-id", id, "x-fail", "2", "x-fail-mode", "grpc", "x-fail-status", tc.failStatus)
			got := resp.Header.Get("grpc-status")
			if got == "" {
				got = resp.Trailer.Get("grpc-status")
			}
			if resp.StatusCode != 200 || got != tc.want {
				t.Fatalf("status %d grpc-status %q (body %q), want grpc-status %s", resp.StatusCode, got, body, tc.want)
			}
			if n := len(f.tries(id)); n != tc.attempts {
				t.Fatalf("backend saw %d attempts, want %d", n, tc.attempts)
			}
		})
	}

	t.Run("backoff grows", func(t *testing.T) {
		// Full jitter: retry n waits uniformly in [0, 40ms*2^(n-1)]. Each gap
		// must stay under its cap, and over a dozen requests the third
		// waits clearly longer than the first (means 20ms vs 80ms).
		const runs = 12
		const slack = 100 * time.Millisecond // scheduling on a loaded machine
		var sum [3]time.Duration
		for range runs {
			id := reqID(t, &ids)
			resp, body := testutil.Get(t, c, base+"/backoff/x", "x-id", id, "x-fail", "3")
			tries := f.tries(id)
			if resp.StatusCode != 200 || len(tries) != 4 {
				t.Fatalf("status %d (body %q) after %d attempts, want 200 after 4", resp.StatusCode, body, len(tries))
			}
			for i := range 3 {
				gap := tries[i+1].at.Sub(tries[i].at)
				if limit := 40*time.Millisecond<<i + slack; gap > limit {
					t.Fatalf("gap before retry %d is %v, over its cap %v", i+1, gap, limit)
				}
				sum[i] += gap
			}
		}
		if sum[2] <= sum[0] {
			t.Fatalf("backoff does not grow: total gaps %v", sum)
		}
		t.Logf("total gaps over %d requests: %v", runs, sum)
	})
	t.Run("backoff max caps the wait", func(t *testing.T) {
		for range 4 {
			id := reqID(t, &ids)
			resp, _ := testutil.Get(t, c, base+"/capped/x", "x-id", id, "x-fail", "5")
			tries := f.tries(id)
			if resp.StatusCode != 200 || len(tries) != 6 {
				t.Fatalf("status %d after %d attempts, want 200 after 6", resp.StatusCode, len(tries))
			}
			for i := 1; i < len(tries); i++ {
				if gap := tries[i].at.Sub(tries[i-1].at); gap > 150*time.Millisecond { // the 50ms cap plus scheduling slack
					t.Fatalf("gap before retry %d is %v; max is 50ms", i, gap)
				}
			}
		}
	})
	if v := metricValue(t, p, "omnirelay_upstream_retries_total", "cluster", "flaky"); v == 0 {
		t.Fatal("omnirelay_upstream_retries_total stayed 0")
	}
}

const timeoutsConfig = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    virtual_hosts:
      - name: all
        routes:
          - match: { path_prefix: /timeout/ }
            cluster: slow
            timeout: 200ms
          - match: { path_prefix: /grpc-timeout/ }
            cluster: slow
          - match: { path_prefix: /per-try/ }
            cluster: slow-fast
            timeout: 3s
            retry: { attempts: 2, on: [5xx], per_try_timeout: 150ms, backoff: { base: 2ms } }
          - match: { path_prefix: /per-try-reset/ }
            cluster: slow
            retry: { attempts: 2, on: [reset], per_try_timeout: 150ms }
          - match: { path_prefix: /fast/ }
            cluster: fast
clusters:
  - { name: slow, endpoints: [{{slow}}] }
  - { name: fast, endpoints: [{{fast}}] }
  - { name: slow-fast, endpoints: [{{slow}}, {{fast}}] }
`

// TestResilienceTimeouts proves the route timeout (504 without hanging the
// proxy), a per-try timeout that moves on to a fast host, and a
// grpc-timeout header that shortens the deadline.
func TestResilienceTimeouts(t *testing.T) {
	sleep := func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/slow-body") {
			// The head and part of the body at once, the rest too late.
			_, _ = w.Write([]byte("part;"))
			w.(http.Flusher).Flush()
		}
		select {
		case <-time.After(2 * time.Second):
			_, _ = w.Write([]byte("slow"))
		case <-r.Context().Done():
		}
	}
	slow := startBackend(t, "slow", sleep)
	fast := startBackend(t, "fast", nil)
	web := testutil.Addr(t)
	p := startProxy(t, timeoutsConfig, map[string]string{"web": web, "slow": slow.Addr, "fast": fast.Addr})
	c := &http.Client{Timeout: 5 * time.Second}
	base := "http://" + web

	timed := func(t *testing.T, cl *http.Client, method, path string, hdr ...string) (*http.Response, string, time.Duration) {
		t.Helper()
		start := time.Now()
		body := ""
		if method == "POST" {
			body = "\x00\x00\x00\x00\x00"
		}
		resp, b := sendReq(t, cl, method, base+path, body, hdr...)
		return resp, b, time.Since(start)
	}

	t.Run("route timeout", func(t *testing.T) {
		resp, body, took := timed(t, c, "GET", "/timeout/x")
		if resp.StatusCode != 504 || !strings.Contains(body, "timeout") {
			t.Fatalf("status %d body %q, want 504", resp.StatusCode, body)
		}
		if took < 150*time.Millisecond || took > time.Second {
			t.Fatalf("504 after %v, want about 200ms", took)
		}
		if v := metricValue(t, p, "omnirelay_upstream_timeouts_total", "cluster", "slow"); v < 1 {
			t.Fatalf("omnirelay_upstream_timeouts_total = %v", v)
		}
		// The proxy is not stuck on the abandoned upstream request.
		if resp, body := testutil.Get(t, c, base+"/fast/x"); resp.StatusCode != 200 {
			t.Fatalf("after a timeout: status %d body %q", resp.StatusCode, body)
		}
	})

	t.Run("per-try timeout retries a fast host", func(t *testing.T) {
		before := slow.Hits.Load()
		for i := range 8 {
			resp, body, took := timed(t, c, "GET", "/per-try/x")
			if resp.StatusCode != 200 || resp.Header.Get("x-backend") != "fast" {
				t.Fatalf("request %d: status %d backend %q body %q", i, resp.StatusCode, resp.Header.Get("x-backend"), body)
			}
			if took > time.Second {
				t.Fatalf("request %d took %v: the per-try timeout did not cut the slow attempt", i, took)
			}
		}
		if n := slow.Hits.Load() - before; n < 3 {
			t.Fatalf("slow host got %d of the first attempts; round robin should give it about half", n)
		}
	})

	t.Run("per-try timeout is not a reset", func(t *testing.T) {
		// Envoy retries a per-try timeout under 5xx or gateway-error only.
		before := slow.Hits.Load()
		resp, body, took := timed(t, c, "GET", "/per-try-reset/x")
		if resp.StatusCode != 504 || slow.Hits.Load()-before != 1 {
			t.Fatalf("status %d (body %q) after %d attempts, want 504 after 1", resp.StatusCode, body, slow.Hits.Load()-before)
		}
		if took > time.Second {
			t.Fatalf("504 after %v, want about 150ms", took)
		}
	})
	t.Run("grpc-timeout shortens the deadline", func(t *testing.T) {
		resp, body, took := timed(t, c, "GET", "/grpc-timeout/x", "grpc-timeout", "100m")
		if resp.StatusCode != 504 {
			t.Fatalf("status %d body %q, want 504", resp.StatusCode, body)
		}
		if took < 80*time.Millisecond || took > 600*time.Millisecond {
			t.Fatalf("504 after %v, want about 100ms", took)
		}
	})
	t.Run("grpc-timeout on a gRPC call", func(t *testing.T) {
		resp, body, took := timed(t, testutil.H2CClient(), "POST", "/grpc-timeout/pkg.Svc/Call",
			"content-type", "application/grpc", "te", "trailers", "grpc-timeout", "100m")
		gs := resp.Header.Get("grpc-status")
		if gs == "" {
			gs = resp.Trailer.Get("grpc-status")
		}
		if resp.StatusCode != 200 || gs != "4" {
			t.Fatalf("status %d grpc-status %q body %q, want DEADLINE_EXCEEDED (4)", resp.StatusCode, gs, body)
		}
		if took > 600*time.Millisecond {
			t.Fatalf("answer after %v, want about 100ms", took)
		}
	})
	t.Run("route timeout covers the response body", func(t *testing.T) {
		start := time.Now()
		resp, err := c.Get(base + "/timeout/slow-body")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if resp.StatusCode != 200 || err == nil || string(b) != "part;" {
			t.Fatalf("status %d body %q err %v: want the head, the first part, then a cut", resp.StatusCode, b, err)
		}
		if took > time.Second {
			t.Fatalf("body cut after %v, want about 200ms", took)
		}
	})
	t.Run("route timeout wins over a longer grpc-timeout", func(t *testing.T) {
		resp, _, took := timed(t, c, "GET", "/timeout/x", "grpc-timeout", "5S")
		if resp.StatusCode != 504 || took > time.Second {
			t.Fatalf("status %d after %v, want 504 after about 200ms", resp.StatusCode, took)
		}
	})
}
