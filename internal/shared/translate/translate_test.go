package translate

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
)

func translateYAML(t testing.TB, doc string) *resources.Snapshot {
	t.Helper()
	c, err := config.Parse("testdata/inline.yaml", []byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	snap, err := Translate(c)
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	return snap
}

func hcmOf(t testing.TB, l *listenerv3.Listener, chain int) *hcmv3.HttpConnectionManager {
	t.Helper()
	m := &hcmv3.HttpConnectionManager{}
	if err := l.GetFilterChains()[chain].GetFilters()[0].GetTypedConfig().UnmarshalTo(m); err != nil {
		t.Fatal(err)
	}
	return m
}

func filterNames(m *hcmv3.HttpConnectionManager) string {
	var names []string
	for _, f := range m.GetHttpFilters() {
		names = append(names, f.GetName())
	}
	return strings.Join(names, ",")
}

const backends = "clusters: [{ name: a, endpoints: [127.0.0.1:9] }]\n"

func TestTranslate(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		check func(t *testing.T, s *resources.Snapshot)
	}{
		{
			name: "filters keep their order, router last",
			yaml: "listeners: [{ name: l, address: 127.0.0.1:80, filters: [{ fault: { abort: { status: 503, percent: 1 } } }, { headers: { request_add: { a: b } } }], virtual_hosts: [{ name: v, routes: [{ cluster: a }] }] }]\n" + backends,
			check: func(t *testing.T, s *resources.Snapshot) {
				want := NameFault + "," + NameHeaderMut + "," + NameRouter
				if got := filterNames(hcmOf(t, s.Listeners[0], 0)); got != want {
					t.Errorf("filters = %s, want %s", got, want)
				}
			},
		},
		{
			name: "a route rate limit brings the filter into the chain",
			yaml: "listeners: [{ name: l, address: 127.0.0.1:80, virtual_hosts: [{ name: v, routes: [{ cluster: a, local_rate_limit: { max_tokens: 5 } }] }] }]\n" + backends,
			check: func(t *testing.T, s *resources.Snapshot) {
				m := hcmOf(t, s.Listeners[0], 0)
				if got, want := filterNames(m), NameLocalRL+","+NameRouter; got != want {
					t.Errorf("filters = %s, want %s", got, want)
				}
				r := m.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0]
				if _, ok := r.GetTypedPerFilterConfig()[NameLocalRL]; !ok {
					t.Error("route has no local_ratelimit override")
				}
			},
		},
		{
			name: "retry attempts count the first try; default conditions",
			yaml: "listeners: [{ name: l, address: 127.0.0.1:80, virtual_hosts: [{ name: v, routes: [{ cluster: a, retry: { retriable_status_codes: [503] } }] }] }]\n" + backends,
			check: func(t *testing.T, s *resources.Snapshot) {
				rp := hcmOf(t, s.Listeners[0], 0).GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetRetryPolicy()
				if rp.GetNumRetries().GetValue() != config.DefaultRetryAttempts-1 {
					t.Errorf("num_retries = %d", rp.GetNumRetries().GetValue())
				}
				if rp.GetRetryOn() != "connect-failure,refused-stream,retriable-status-codes" {
					t.Errorf("retry_on = %q", rp.GetRetryOn())
				}
			},
		},
		{
			name: "methods become one :method matcher",
			yaml: "listeners: [{ name: l, address: 127.0.0.1:80, virtual_hosts: [{ name: v, routes: [{ match: { methods: [GET, M-SEARCH] }, cluster: a }] }] }]\n" + backends,
			check: func(t *testing.T, s *resources.Snapshot) {
				h := hcmOf(t, s.Listeners[0], 0).GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetMatch().GetHeaders()[0]
				if h.GetName() != ":method" || h.GetStringMatch().GetSafeRegex().GetRegex() != "^(GET|M-SEARCH)$" {
					t.Errorf("matcher = %v", h)
				}
			},
		},
		{
			name: "protocol h2 implies verified TLS with ALPN h2",
			yaml: "clusters: [{ name: a, protocol: h2, endpoints: [127.0.0.1:9] }]\n",
			check: func(t *testing.T, s *resources.Snapshot) {
				ut := &tlsv3.UpstreamTlsContext{}
				if err := s.Clusters[0].GetTransportSocket().GetTypedConfig().UnmarshalTo(ut); err != nil {
					t.Fatal(err)
				}
				ctx := ut.GetCommonTlsContext()
				if strings.Join(ctx.GetAlpnProtocols(), ",") != "h2" || ctx.GetValidationContext().GetSystemRootCerts() == nil {
					t.Errorf("tls context = %v", ctx)
				}
			},
		},
		{
			name: "host names make a STRICT_DNS cluster, IPs a STATIC one",
			yaml: "clusters: [{ name: a, endpoints: [backend.local:80] }, { name: b, endpoints: [\"[::1]:80\"] }]\n",
			check: func(t *testing.T, s *resources.Snapshot) {
				if s.Clusters[0].GetType() != clusterv3.Cluster_STRICT_DNS || s.Clusters[1].GetType() != clusterv3.Cluster_STATIC {
					t.Errorf("types = %v, %v", s.Clusters[0].GetType(), s.Clusters[1].GetType())
				}
			},
		},
		{
			name: "eds moves endpoints to a load assignment",
			yaml: "clusters: [{ name: a, eds: true, endpoints: [127.0.0.1:1] }]\n",
			check: func(t *testing.T, s *resources.Snapshot) {
				if s.Clusters[0].GetType() != clusterv3.Cluster_EDS || s.Clusters[0].GetLoadAssignment() != nil {
					t.Errorf("cluster = %v", s.Clusters[0])
				}
				if len(s.Endpoints) != 1 || s.Endpoints[0].GetClusterName() != "a" {
					t.Errorf("endpoints = %v", s.Endpoints)
				}
			},
		},
		{
			name: "https: the certificate without sni is the default chain",
			yaml: "listeners: [{ name: l, address: 127.0.0.1:443, protocol: https, tls: { certificates: [{ cert_file: certs/api.crt, key_file: certs/api.key, sni: [api.example.com] }, { cert_file: certs/shop.crt, key_file: certs/shop.key }] }, virtual_hosts: [{ name: v, routes: [{ cluster: a }] }] }]\n" + backends,
			check: func(t *testing.T, s *resources.Snapshot) {
				chains := s.Listeners[0].GetFilterChains()
				if len(chains) != 2 || chains[1].GetFilterChainMatch() != nil || len(s.Listeners[0].GetListenerFilters()) != 1 {
					t.Errorf("chains = %v", chains)
				}
			},
		},
		{
			name: "cors policy on every virtual host",
			yaml: "listeners: [{ name: l, address: 127.0.0.1:80, filters: [{ cors: { allow_origins: [\"*\"], max_age: 90s } }], virtual_hosts: [{ name: v, domains: [a], routes: [{ cluster: a }] }, { name: w, domains: [b], routes: [{ cluster: a }] }] }]\n" + backends,
			check: func(t *testing.T, s *resources.Snapshot) {
				for _, vh := range hcmOf(t, s.Listeners[0], 0).GetRouteConfig().GetVirtualHosts() {
					if _, ok := vh.GetTypedPerFilterConfig()[NameCORS]; !ok {
						t.Errorf("virtual host %s has no cors policy", vh.GetName())
					}
				}
			},
		},
		{
			name: "redirect code and https",
			yaml: "listeners: [{ name: l, address: 127.0.0.1:80, virtual_hosts: [{ name: v, routes: [{ redirect: { https: true, code: 302 } }] }] }]\n",
			check: func(t *testing.T, s *resources.Snapshot) {
				rd := hcmOf(t, s.Listeners[0], 0).GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetRedirect()
				if !rd.GetHttpsRedirect() || rd.GetResponseCode() != routev3.RedirectAction_FOUND {
					t.Errorf("redirect = %v", rd)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, translateYAML(t, tt.yaml))
		})
	}
}

func TestTranslateIsDeterministic(t *testing.T) {
	c, err := config.Load("testdata/https.yaml")
	if err != nil {
		t.Fatal(err)
	}
	first, err := Translate(c)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		again, err := Translate(c)
		if err != nil {
			t.Fatal(err)
		}
		if again.Hash() != first.Hash() {
			t.Fatalf("hash changed between translations: %s vs %s", first.Hash(), again.Hash())
		}
	}
}

func TestTranslateRejectsInvalid(t *testing.T) {
	c := &config.Config{Clusters: []config.Cluster{{Name: "a"}}}
	_, err := Translate(c)
	if err == nil || !strings.Contains(err.Error(), "clusters[0].endpoints: a cluster needs at least one endpoint") {
		t.Fatalf("Translate = %v", err)
	}
}

func BenchmarkTranslateSample(b *testing.B) {
	c, err := config.Load("testdata/sample.yaml")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Translate(c); err != nil {
			b.Fatal(err)
		}
	}
}
