package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// gate is a backend whose /hold requests wait for release, so that tests can
// keep requests in flight; other requests answer at once (or per flaky).
type gate struct {
	*backend
	arrived chan string
	release chan struct{}
	mu      sync.Mutex
	seen    map[string]int
}

func startGate(t testing.TB, name string) *gate {
	g := &gate{arrived: make(chan string, 16), release: make(chan struct{}), seen: map[string]int{}}
	g.backend = startBackend(t, name, func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("x-id")
		g.mu.Lock()
		g.seen[id]++
		n := g.seen[id]
		g.mu.Unlock()
		// x-hold-attempt: which attempt of this id waits (default the first).
		holdAt, _ := strconv.Atoi(r.Header.Get("x-hold-attempt"))
		holdAt = max(holdAt, 1)
		if strings.HasPrefix(r.URL.Path, "/hold") && n < holdAt {
			w.WriteHeader(503)
			return
		}
		if strings.HasPrefix(r.URL.Path, "/hold") && n == holdAt {
			g.arrived <- id
			select {
			case <-g.release:
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "%s attempt %d", name, n)
	})
	return g
}

func (g *gate) attempts(id string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.seen[id]
}

func (g *gate) waitArrived(t testing.TB, id string) {
	t.Helper()
	select {
	case got := <-g.arrived:
		if got != id {
			t.Fatalf("request %q arrived, want %q", got, id)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("request %q never reached the backend", id)
	}
}

const breakerConfig = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    virtual_hosts:
      - name: all
        routes:
          - match: { path_prefix: /cb/ }
            cluster: cb
            prefix_rewrite: /
          - match: { path_prefix: /retries/ }
            cluster: cb-retries
            prefix_rewrite: /
            retry: { attempts: 2, on: [5xx], backoff: { base: 1ms } }
          - match: { path_prefix: /budget/ }
            cluster: cb-budget
            prefix_rewrite: /
            retry: { attempts: 2, on: [5xx], backoff: { base: 1ms } }
clusters:
  - name: cb
    endpoints: [{{g1}}]
    circuit_breaker: { max_requests: 1 }
  - name: cb-retries
    endpoints: [{{g2}}]
    circuit_breaker: { max_retries: 1 }
  - name: cb-budget
    endpoints: [{{g3}}]
    retry_budget: { percent: 1, min_concurrency: 1 }
`

// TestResilienceCircuitBreakers proves max_requests fails fast with a 503
// and counts the overflow, and that max_retries and a retry budget each cap
// retries in flight.
func TestResilienceCircuitBreakers(t *testing.T) {
	g1, g2, g3 := startGate(t, "g1"), startGate(t, "g2"), startGate(t, "g3")
	web := testutil.Addr(t)
	p := startProxy(t, breakerConfig, map[string]string{"web": web, "g1": g1.Addr, "g2": g2.Addr, "g3": g3.Addr})
	c := &http.Client{Timeout: 5 * time.Second}
	base := "http://" + web

	type result struct {
		status int
		body   string
	}
	background := func(path string, hdr ...string) chan result {
		ch := make(chan result, 1)
		go func() {
			req, _ := http.NewRequest("GET", base+path, nil)
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			resp, err := c.Do(req)
			if err != nil {
				ch <- result{body: err.Error()}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			ch <- result{resp.StatusCode, string(b)}
		}()
		return ch
	}
	wait := func(t *testing.T, ch chan result) result {
		t.Helper()
		select {
		case r := <-ch:
			return r
		case <-time.After(5 * time.Second):
			t.Fatal("request in flight never finished")
		}
		return result{}
	}

	t.Run("max_requests", func(t *testing.T) {
		held := background("/cb/hold", "x-id", "held")
		g1.waitArrived(t, "held")
		start := time.Now()
		resp, body := testutil.Get(t, c, base+"/cb/quick", "x-id", "second")
		if resp.StatusCode != 503 || body != "upstream overflow\n" {
			t.Fatalf("second request: status %d body %q, want 503 upstream overflow", resp.StatusCode, body)
		}
		if took := time.Since(start); took > 500*time.Millisecond {
			t.Fatalf("overflow answered after %v, want at once", took)
		}
		if g1.attempts("second") != 0 {
			t.Fatal("the refused request reached the backend")
		}
		if v := metricValue(t, p, "omnirelay_upstream_overflow_total", "cluster", "cb", "limit", "requests"); v < 1 {
			t.Fatalf("omnirelay_upstream_overflow_total{limit=requests} = %v", v)
		}
		g1.release <- struct{}{}
		if r := wait(t, held); r.status != 200 {
			t.Fatalf("held request: %d %q", r.status, r.body)
		}
		// The slot comes back once the held response is done.
		testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "a request after the slot is freed", testutil.Bool(func() bool {
			resp, _ := testutil.Get(t, c, base+"/cb/quick", "x-id", "third")
			return resp.StatusCode == 200
		}))
	})

	retryCaps := []struct {
		name, path, cluster string
		g                   *gate
	}{
		{name: "max_retries", path: "/retries/hold", cluster: "cb-retries", g: g2},
		{name: "retry_budget", path: "/budget/hold", cluster: "cb-budget", g: g3},
	}
	for _, tc := range retryCaps {
		t.Run(tc.name, func(t *testing.T) {
			// A's first attempt fails, its retry holds the only retry slot.
			held := background(tc.path, "x-id", "a", "x-hold-attempt", "2")
			tc.g.waitArrived(t, "a")
			// B's first attempt fails too; its retry is refused.
			resp, body := testutil.Get(t, c, base+tc.path, "x-id", "b", "x-hold-attempt", "2")
			if resp.StatusCode != 503 || tc.g.attempts("b") != 1 {
				t.Fatalf("B: status %d (body %q) after %d attempts; want its first 503, not retried",
					resp.StatusCode, body, tc.g.attempts("b"))
			}
			if v := metricValue(t, p, "omnirelay_upstream_overflow_total", "cluster", tc.cluster, "limit", "retries"); v < 1 {
				t.Fatalf("omnirelay_upstream_overflow_total{limit=retries} = %v", v)
			}
			tc.g.release <- struct{}{}
			if r := wait(t, held); r.status != 200 || tc.g.attempts("a") != 2 {
				t.Fatalf("A: %d %q after %d attempts, want 200 after 2", r.status, r.body, tc.g.attempts("a"))
			}
			// With the slot free again, a retry goes through.
			testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "a retry after the slot is freed", testutil.Bool(func() bool {
				id := fmt.Sprintf("c-%d", time.Now().UnixNano())
				resp, _ := testutil.Get(t, c, base+tc.path, "x-id", id, "x-hold-attempt", "3")
				return resp.StatusCode == 503 && tc.g.attempts(id) == 2
			}))
		})
	}
}
