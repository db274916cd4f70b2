package translate

import (
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
)

const routerTypeURL = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

func goldenConfigs(t *testing.T) map[string]*config.Config {
	t.Helper()
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	out := map[string]*config.Config{}
	for _, f := range files {
		c, err := config.Load(f)
		if err != nil {
			t.Fatalf("load %s: %v", f, err)
		}
		out[filepath.Base(f)] = c
	}
	return out
}

// validateEach runs every resource's generated ValidateAll on its own, on
// top of Snapshot.Validate (which the translators already ran): the test
// states the acceptance rule directly.
func validateEach(t *testing.T, s *resources.Snapshot) {
	t.Helper()
	if err := s.Validate(); err != nil {
		t.Fatalf("Snapshot.Validate: %v", err)
	}
	var msgs []interface{ ValidateAll() error }
	for _, r := range s.Listeners {
		msgs = append(msgs, r)
	}
	for _, r := range s.Routes {
		msgs = append(msgs, r)
	}
	for _, r := range s.Clusters {
		msgs = append(msgs, r)
	}
	for _, r := range s.Endpoints {
		msgs = append(msgs, r)
	}
	for _, m := range msgs {
		if err := m.ValidateAll(); err != nil {
			t.Errorf("ValidateAll: %v", err)
		}
	}
	for _, cla := range s.Endpoints {
		for i, g := range cla.GetEndpoints() {
			if g.GetLoadBalancingWeight().GetValue() == 0 {
				t.Errorf("cluster load assignment %q: endpoints[%d] has no load_balancing_weight", cla.GetClusterName(), i)
			}
		}
	}
}

func unpackHCM(t *testing.T, a interface{ UnmarshalTo(proto.Message) error }) *hcmv3.HttpConnectionManager {
	t.Helper()
	m := &hcmv3.HttpConnectionManager{}
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestADSShape checks the form OmniRelay and Envoy get from MeshKit.
func TestADSShape(t *testing.T) {
	for name, c := range goldenConfigs(t) {
		t.Run(name, func(t *testing.T) {
			s, err := TranslateWith(c, Options{ADS: true, ServiceEndpoints: testRegistry})
			if err != nil {
				t.Fatal(err)
			}
			validateEach(t, s)
			routes := 0
			for _, l := range s.Listeners {
				for _, fc := range l.GetFilterChains() {
					for _, f := range fc.GetFilters() {
						if f.GetName() != NameHCM {
							continue
						}
						m := unpackHCM(t, f.GetTypedConfig())
						r := m.GetRds()
						if r == nil {
							t.Fatalf("listener %q: HCM has no rds", l.GetName())
						}
						if r.GetConfigSource().GetAds() == nil || r.GetConfigSource().GetResourceApiVersion() != corev3.ApiVersion_V3 {
							t.Errorf("listener %q: rds config source %v, want ads v3", l.GetName(), r.GetConfigSource())
						}
						if r.GetRouteConfigName() != l.GetName() {
							t.Errorf("listener %q: route_config_name %q", l.GetName(), r.GetRouteConfigName())
						}
						routes++
					}
				}
			}
			if routes > 0 && len(s.Routes) == 0 {
				t.Error("HCMs use rds but Routes is empty")
			}
			for _, cl := range s.Clusters {
				if cl.GetType() != clusterv3.Cluster_EDS && cl.GetType() != clusterv3.Cluster_STRICT_DNS {
					t.Errorf("cluster %q: type %v, want EDS (or STRICT_DNS for host names)", cl.GetName(), cl.GetType())
				}
				if cl.GetType() == clusterv3.Cluster_EDS && cl.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
					t.Errorf("cluster %q: eds config is not ads", cl.GetName())
				}
			}
		})
	}
}

// TestTranslateIsTranslateWithZeroOptions pins the promise that the static
// form did not change when options were added.
func TestTranslateIsTranslateWithZeroOptions(t *testing.T) {
	for name, c := range goldenConfigs(t) {
		t.Run(name, func(t *testing.T) {
			a, err := Translate(c)
			if err != nil {
				t.Fatal(err)
			}
			b, err := TranslateWith(c, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if a.Hash() != b.Hash() {
				t.Error("Translate and TranslateWith(Options{}) differ")
			}
			if len(a.Routes) != 0 {
				t.Error("static form has RDS routes")
			}
		})
	}
}

func TestForGRPCShapeOfGoldenInputs(t *testing.T) {
	for name, c := range goldenConfigs(t) {
		t.Run(name, func(t *testing.T) {
			s, err := ForGRPC(c, Options{ServiceEndpoints: testRegistry})
			if err != nil {
				t.Fatal(err)
			}
			validateEach(t, s)
			for _, l := range s.Listeners {
				if len(l.GetFilterChains()) != 0 || l.GetAddress() != nil {
					t.Errorf("listener %q: has a socket side", l.GetName())
				}
				m := unpackHCM(t, l.GetApiListener().GetApiListener())
				fs := m.GetHttpFilters()
				if len(fs) == 0 || fs[len(fs)-1].GetTypedConfig().GetTypeUrl() != routerTypeURL {
					t.Errorf("listener %q: router is not last with type %s", l.GetName(), routerTypeURL)
				}
				if m.GetRds().GetConfigSource().GetAds() == nil {
					t.Errorf("listener %q: rds is not over ads", l.GetName())
				}
			}
			for _, cl := range s.Clusters {
				if cl.GetType() != clusterv3.Cluster_EDS || cl.GetTransportSocket() != nil || len(cl.GetHealthChecks()) != 0 {
					t.Errorf("cluster %q is not a plain EDS cluster: %v", cl.GetName(), cl)
				}
				switch cl.GetLbPolicy() {
				case clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_RING_HASH, clusterv3.Cluster_LEAST_REQUEST:
				default:
					t.Errorf("cluster %q: lb_policy %v gRPC lacks", cl.GetName(), cl.GetLbPolicy())
				}
			}
			for _, cla := range s.Endpoints {
				checkGRPCLoadAssignment(t, cla)
			}
		})
	}
}

// checkGRPCLoadAssignment applies grpc-go's own EDS rules
// (xdsresource.parseEDSRespProto): locality IDs, non-zero weights, no
// priority gap, no address twice.
func checkGRPCLoadAssignment(t *testing.T, cla *endpointv3.ClusterLoadAssignment) {
	t.Helper()
	prios := map[uint32]bool{}
	addrs := map[string]bool{}
	for i, g := range cla.GetEndpoints() {
		if g.GetLocality() == nil {
			t.Errorf("%s: endpoints[%d] has no locality", cla.GetClusterName(), i)
		}
		if g.GetLoadBalancingWeight().GetValue() == 0 {
			t.Errorf("%s: endpoints[%d] has no weight", cla.GetClusterName(), i)
		}
		prios[g.GetPriority()] = true
		for _, e := range g.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			key := net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
			if addrs[key] {
				t.Errorf("%s: address %s twice", cla.GetClusterName(), key)
			}
			addrs[key] = true
		}
	}
	for p := range uint32(len(prios)) {
		if !prios[p] {
			t.Errorf("%s: priority %d missing (have %v)", cla.GetClusterName(), p, prios)
		}
	}
}

func TestForGRPC(t *testing.T) {
	const clusters = "clusters: [{ name: a, endpoints: [127.0.0.1:9] }, { name: b, endpoints: [127.0.0.1:10] }]\n"
	tests := []struct {
		name      string
		yaml      string
		listeners []string
		clusters  []string
		withheld  []string // "name: reason substring"
	}{
		{
			name:      "one listener per exact domain, wildcards skipped",
			yaml:      "listeners: [{ name: l, address: 127.0.0.1:80, virtual_hosts: [{ name: v, domains: [x.svc, 'x.svc:50051', '*.svc', '*'], routes: [{ cluster: a }] }] }]\n" + clusters,
			listeners: []string{"x.svc", "x.svc:50051"},
			clusters:  []string{"a"},
		},
		{
			name:     "only wildcard domains give nothing",
			yaml:     "listeners: [{ name: l, address: 127.0.0.1:80, virtual_hosts: [{ name: v, routes: [{ cluster: a }] }] }]\n" + clusters,
			clusters: nil,
		},
		{
			name: "required filter gRPC lacks withholds the listener",
			yaml: "listeners: [{ name: l, address: 127.0.0.1:80, filters: [{ cors: { allow_origins: ['*'] } }], virtual_hosts: [{ name: v, domains: [x.svc, y.svc], routes: [{ cluster: a }] }] }]\n" + clusters,
			withheld: []string{
				`x.svc: listener "l" requires filter envoy.filters.http.cors which gRPC proxyless clients lack`,
				`y.svc: listener "l" requires filter envoy.filters.http.cors`,
			},
		},
		{
			name:      "optional filter gRPC lacks is dropped",
			yaml:      "listeners: [{ name: l, address: 127.0.0.1:80, filters: [{ cors: { allow_origins: ['*'] }, optional: true }, { fault: { delay: { fixed: 1s, percent: 5 } } }], virtual_hosts: [{ name: v, domains: [x.svc], routes: [{ cluster: b }] }] }]\n" + clusters,
			listeners: []string{"x.svc"},
			clusters:  []string{"b"},
		},
		{
			name:     "route rate limits need a filter gRPC lacks",
			yaml:     "listeners: [{ name: l, address: 127.0.0.1:80, virtual_hosts: [{ name: v, domains: [x.svc], routes: [{ cluster: a, local_rate_limit: { max_tokens: 5 } }] }] }]\n" + clusters,
			withheld: []string{`x.svc: listener "l" requires filter envoy.filters.http.local_ratelimit`},
		},
		{
			name: "a domain goes to the first listener serving it",
			yaml: "listeners: [{ name: l1, address: 127.0.0.1:80, virtual_hosts: [{ name: v, domains: [x.svc], routes: [{ cluster: a }] }] }," +
				" { name: l2, address: 127.0.0.1:81, virtual_hosts: [{ name: v, domains: [x.svc, z.svc], routes: [{ cluster: b }] }] }]\n" + clusters,
			listeners: []string{"x.svc", "z.svc"},
			clusters:  []string{"a", "b"},
			withheld:  []string{`x.svc: listener "l2" also serves domain x.svc; gRPC clients get listener "l1"'s routes`},
		},
		{
			name:      "tcp listeners are not for gRPC",
			yaml:      "listeners: [{ name: t, address: 127.0.0.1:80, protocol: tcp, cluster: a }]\n" + clusters,
			listeners: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Parse("inline.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			var withheld []Withheld
			s, err := ForGRPC(c, Options{OnWithheld: func(w Withheld) { withheld = append(withheld, w) }})
			if err != nil {
				t.Fatalf("ForGRPC: %v", err)
			}
			validateEach(t, s)
			var ls, cs []string
			for _, l := range s.Listeners {
				ls = append(ls, l.GetName())
			}
			for _, cl := range s.Clusters {
				cs = append(cs, cl.GetName())
			}
			if !slices.Equal(ls, tt.listeners) {
				t.Errorf("listeners = %v, want %v", ls, tt.listeners)
			}
			if !slices.Equal(cs, tt.clusters) {
				t.Errorf("clusters = %v, want %v", cs, tt.clusters)
			}
			if len(withheld) != len(tt.withheld) {
				t.Fatalf("withheld = %+v, want %d", withheld, len(tt.withheld))
			}
			for i, w := range withheld {
				name, reason, _ := strings.Cut(tt.withheld[i], ": ")
				if w.TypeURL != resource.ListenerType || w.Name != name || !strings.Contains(w.Reason, reason) {
					t.Errorf("withheld[%d] = %+v, want %s with reason containing %q", i, w, name, reason)
				}
			}
			for _, l := range s.Listeners {
				for _, f := range unpackHCM(t, l.GetApiListener().GetApiListener()).GetHttpFilters() {
					if f.GetName() == NameCORS {
						t.Errorf("listener %q kept the cors filter", l.GetName())
					}
				}
			}
			for _, rc := range s.Routes {
				for _, vh := range rc.GetVirtualHosts() {
					if _, ok := vh.GetTypedPerFilterConfig()[NameCORS]; ok {
						t.Errorf("virtual host %q kept the cors policy of a dropped filter", vh.GetName())
					}
				}
			}
		})
	}
}

func TestOptionalFilter(t *testing.T) {
	s := translateYAML(t, "listeners: [{ name: l, address: 127.0.0.1:80, filters: [{ fault: { abort: { status: 503, percent: 1 } }, optional: true }, { headers: { request_add: { a: b } } }], virtual_hosts: [{ name: v, routes: [{ cluster: a }] }] }]\n"+backends)
	var got []bool
	for _, f := range hcmOf(t, s.Listeners[0], 0).GetHttpFilters() {
		got = append(got, f.GetIsOptional())
	}
	if want := []bool{true, false, false}; !slices.Equal(got, want) {
		t.Errorf("is_optional = %v, want %v (fault, headers, router)", got, want)
	}
}

func TestServiceEndpoints(t *testing.T) {
	const doc = "clusters: [{ name: c, service: web, endpoints: [{ address: 10.0.0.1:80, weight: 2 }] }]\n"
	tests := []struct {
		name    string
		reg     []config.Endpoint
		wantErr string
		want    []string // address/health in CLA order
	}{
		{name: "no registry endpoints", want: []string{"10.0.0.1/UNKNOWN"}},
		{
			name: "registry endpoints join, duplicates keep the first",
			reg: []config.Endpoint{
				{Address: "10.0.0.1:80", Health: config.HealthUnhealthy},
				{Address: "10.0.0.2:80", Health: config.HealthDraining},
				{Address: "10.0.0.2:80"},
				{Address: "10.0.0.3:80", Health: config.HealthHealthy},
			},
			want: []string{"10.0.0.1/UNKNOWN", "10.0.0.2/DRAINING", "10.0.0.3/HEALTHY"},
		},
		{name: "host name", reg: []config.Endpoint{{Address: "web.local:80"}}, wantErr: `service "web": endpoint 0 (web.local:80): registry endpoints must be IP addresses`},
		{name: "bad health", reg: []config.Endpoint{{Address: "10.0.0.2:80", Health: "sick"}}, wantErr: `unknown health "sick"`},
		{name: "bad priority", reg: []config.Endpoint{{Address: "10.0.0.2:80", Priority: 200}}, wantErr: "priority 200 is more than 127"},
		{name: "no port", reg: []config.Endpoint{{Address: "10.0.0.2"}}, wantErr: "missing port"},
		{name: "weights overflow", reg: []config.Endpoint{{Address: "10.0.0.2:80", Weight: 1 << 31}, {Address: "10.0.0.3:80", Weight: 1 << 31}}, wantErr: "add up to more than 4294967295"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Parse("inline.yaml", []byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			for _, shape := range []struct {
				name string
				fn   func(*config.Config, Options) (*resources.Snapshot, error)
			}{{"static", TranslateWith}, {"ads", func(c *config.Config, o Options) (*resources.Snapshot, error) {
				o.ADS = true
				return TranslateWith(c, o)
			}}} {
				s, err := shape.fn(c, Options{ServiceEndpoints: func(svc string) []config.Endpoint {
					if svc != "web" {
						t.Errorf("asked for service %q", svc)
					}
					return tt.reg
				}})
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Errorf("%s: err = %v, want %q", shape.name, err, tt.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", shape.name, err)
				}
				if s.Clusters[0].GetType() != clusterv3.Cluster_EDS || len(s.Endpoints) != 1 {
					t.Fatalf("%s: service cluster is not EDS with one load assignment", shape.name)
				}
				var got []string
				for _, g := range s.Endpoints[0].GetEndpoints() {
					for _, e := range g.GetLbEndpoints() {
						got = append(got, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()+"/"+e.GetHealthStatus().String())
					}
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("%s: endpoints = %v, want %v", shape.name, got, tt.want)
				}
			}
		})
	}
}

func TestGRPCPrioritiesAreDense(t *testing.T) {
	c, err := config.Parse("inline.yaml", []byte(`listeners: [{ name: l, address: 127.0.0.1:80, virtual_hosts: [{ name: v, domains: [x.svc], routes: [{ cluster: a }] }] }]
clusters: [{ name: a, endpoints: [{ address: 10.0.0.1:1, priority: 5 }, { address: 10.0.0.2:1, priority: 9 }, { address: 10.0.0.3:1, priority: 5, locality: { zone: z } }] }]
`))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ForGRPC(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []uint32
	for _, g := range s.Endpoints[0].GetEndpoints() {
		got = append(got, g.GetPriority())
	}
	if want := []uint32{0, 1, 0}; !slices.Equal(got, want) {
		t.Errorf("priorities = %v, want %v", got, want)
	}
	checkGRPCLoadAssignment(t, s.Endpoints[0])
}

func BenchmarkShapes(b *testing.B) {
	c, err := config.Load("testdata/mesh.yaml")
	if err != nil {
		b.Fatal(err)
	}
	for _, bm := range []struct {
		name string
		fn   func() (*resources.Snapshot, error)
	}{
		{"ads", func() (*resources.Snapshot, error) {
			return TranslateWith(c, Options{ADS: true, ServiceEndpoints: testRegistry})
		}},
		{"grpc", func() (*resources.Snapshot, error) { return ForGRPC(c, Options{ServiceEndpoints: testRegistry}) }},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bm.fn(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
