package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

const priorityConfig = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    virtual_hosts: [{ name: all, routes: [{ cluster: app }] }]
clusters:
  - name: app
    endpoints:
      - { address: {{a}}, locality: { region: eu, zone: a } }
      - { address: {{b}}, locality: { region: eu, zone: a } }
      - { address: {{c}}, locality: { region: eu, zone: a } }
      - { address: {{backup}}, locality: { region: us, zone: a }, priority: 1 }
    health_check:
      http: { path: /healthz }
      interval: 50ms
      timeout: 500ms
      unhealthy_threshold: 1
      healthy_threshold: 1
`

// TestPriorityFailover: a priority-1 backup takes no traffic while
// priority 0 is healthy, takes the spill-over as priority 0's health drops
// (Envoy's overprovisioning factor 1.4: at 2/3 healthy, 93 % stays), and
// all of it when priority 0 is down; traffic comes back when it recovers.
func TestPriorityFailover(t *testing.T) {
	a, b, c := startToggleBackend(t, "a", ""), startToggleBackend(t, "b", ""), startToggleBackend(t, "c", "")
	backup := startToggleBackend(t, "backup", "")
	web := testutil.Addr(t)
	p := startProxy(t, priorityConfig, map[string]string{"web": web, "a": a.Addr, "b": b.Addr, "c": c.Addr, "backup": backup.Addr})
	cl := &http.Client{Timeout: 5 * time.Second}
	url := "http://" + web + "/"
	healthy := func(addr string, want bool) {
		t.Helper()
		testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, "health of "+addr, func() (bool, string) {
			st := endpointStatus(t, p, "app", addr)
			return st.Healthy == want, ""
		})
	}
	if got := tallyBackends(t, cl, url, 60); got["backup"] != 0 {
		t.Fatalf("all of priority 0 healthy: %v; the backup must get nothing", got)
	}
	a.Sick.Store(true)
	healthy(a.Addr, false)
	time.Sleep(150 * time.Millisecond) // the balancer's availability view refreshes within 50 ms
	got := tallyBackends(t, cl, url, 600)
	if got["a"] != 0 || got["backup"] < 10 || got["backup"] > 90 {
		t.Fatalf("priority 0 at 2/3: %v; want a none and the backup about 7 %% (42 of 600)", got)
	}
	b.Sick.Store(true)
	c.Sick.Store(true)
	healthy(b.Addr, false)
	healthy(c.Addr, false)
	time.Sleep(150 * time.Millisecond)
	if got := tallyBackends(t, cl, url, 60); got["backup"] != 60 {
		t.Fatalf("priority 0 down: %v; want everything on the backup", got)
	}
	for _, x := range []*toggleBackend{a, b, c} {
		x.Sick.Store(false)
		healthy(x.Addr, true)
	}
	time.Sleep(150 * time.Millisecond)
	if got := tallyBackends(t, cl, url, 60); got["backup"] != 0 {
		t.Fatalf("priority 0 recovered: %v; the backup must get nothing again", got)
	}
}
