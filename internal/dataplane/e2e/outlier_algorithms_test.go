package e2e

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// envoyOutlierConfig is an Envoy bootstrap: the point is that the same
// outlier_detection means what it means in Envoy, defaults included.
func envoyOutlierConfig(t *testing.T, admin, web string, backends []string, od string) string {
	t.Helper()
	sock := func(addr string) string {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("{ socket_address: { address: %s, port_value: %s } }", host, port)
	}
	var eps []string
	for _, b := range backends {
		eps = append(eps, "{ endpoint: { address: "+sock(b)+" } }")
	}
	return fmt.Sprintf(`
admin: { address: %s }
static_resources:
  listeners:
    - name: web
      address: %s
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: web
                route_config: { virtual_hosts: [{ name: all, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: od } }] }] }
                http_filters: [{ name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]
  clusters:
    - name: od
      type: STATIC
      lb_policy: ROUND_ROBIN
      load_assignment: { cluster_name: od, endpoints: [{ lb_endpoints: [%s] }] }
      outlier_detection: %s
`, sock(admin), sock(web), strings.Join(eps, ", "), od)
}

// TestOutlierEnvoySemantics runs Envoy-shaped outlier_detection through a
// real proxy with one failing host among healthy ones, and checks the host
// is ejected exactly when Envoy would eject it: enforcing_* percentages
// with Envoy's defaults, and the success-rate and failure-percentage
// algorithms evaluated every interval.
func TestOutlierEnvoySemantics(t *testing.T) {
	tests := []struct {
		name    string
		od      string
		status  int // the bad host's answer
		good    int // healthy hosts beside it
		ejected bool
	}{
		{name: "gateway failures are not enforced by default",
			od: "{ consecutive_gateway_failure: 2, consecutive_5xx: 1000, enforcing_success_rate: 0 }", status: 503, good: 1},
		{name: "gateway failures enforced at 100%",
			od:     "{ consecutive_gateway_failure: 2, enforcing_consecutive_gateway_failure: 100, consecutive_5xx: 1000, enforcing_success_rate: 0 }",
			status: 503, good: 1, ejected: true},
		{name: "consecutive 5xx enforced at 0%",
			od: "{ consecutive_5xx: 2, enforcing_consecutive_5xx: 0, enforcing_success_rate: 0 }", status: 500, good: 1},
		{name: "consecutive 5xx by default",
			od: "{ consecutive_5xx: 2, enforcing_success_rate: 0 }", status: 500, good: 1, ejected: true},
		{name: "success rate: the outlier among six",
			od:     "{ consecutive_5xx: 1000, interval: 0.3s, success_rate_request_volume: 10, max_ejection_percent: 50 }",
			status: 500, good: 5, ejected: true},
		{name: "success rate needs minimum_hosts",
			od:     "{ consecutive_5xx: 1000, interval: 0.3s, success_rate_request_volume: 10, success_rate_minimum_hosts: 7 }",
			status: 500, good: 5},
		{name: "failure percentage enforced",
			od:     "{ consecutive_5xx: 1000, interval: 0.3s, enforcing_success_rate: 0, enforcing_failure_percentage: 100, failure_percentage_request_volume: 10, max_ejection_percent: 50 }",
			status: 500, good: 4, ejected: true},
		{name: "failure percentage off by default",
			od:     "{ consecutive_5xx: 1000, interval: 0.3s, enforcing_success_rate: 0, failure_percentage_request_volume: 10 }",
			status: 500, good: 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status := tc.status
			bad := startBackend(t, "bad", func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("x-backend", "bad")
				w.WriteHeader(status)
			})
			addrs := []string{bad.Addr}
			for i := range tc.good {
				addrs = append(addrs, startBackend(t, fmt.Sprintf("good%d", i), nil).Addr)
			}
			web := testutil.Addr(t)
			p := startProxy(t, envoyOutlierConfig(t, testutil.Addr(t), web, addrs, tc.od), nil)
			c := &http.Client{Timeout: 5 * time.Second}
			// Enough traffic for every host to pass the request volume,
			// then two intervals for the evaluation to run.
			for range 20 * len(addrs) {
				testutil.Get(t, c, "http://"+web+"/")
			}
			deadline := time.Now().Add(1500 * time.Millisecond)
			for !endpointStatus(t, p, "od", bad.Addr).Ejected && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if got := endpointStatus(t, p, "od", bad.Addr).Ejected; got != tc.ejected {
				t.Fatalf("bad host ejected = %v, want %v (outlier_detection %s)", got, tc.ejected, tc.od)
			}
			for _, a := range addrs[1:] {
				if endpointStatus(t, p, "od", a).Ejected {
					t.Fatalf("healthy host %s ejected", a)
				}
			}
		})
	}
}
