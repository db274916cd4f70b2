package capfilter

import (
	"slices"
	"strings"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/omnirelay/omnirelay/internal/shared/capability"
	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
	"github.com/omnirelay/omnirelay/internal/shared/translate"
)

// Two HTTP listeners: "api" needs cors (required or optional per test),
// "web" needs nothing special; "shared" is used by both, "api-only" by
// api alone, "tcp-only" by a TCP listener.
const doc = `
listeners:
  - name: api
    address: 127.0.0.1:8080
    filters: [{ cors: { allow_origins: ["https://a.example"] }, optional: %OPT% }, { fault: { abort: { status: 503, percent: 1 } } }]
    virtual_hosts:
      - name: api
        domains: [api.svc]
        routes:
          - match: { path_prefix: /v2/ }
            cluster: api-only
          - cluster: shared
  - name: web
    address: 127.0.0.1:8081
    virtual_hosts: [{ name: web, domains: [web.svc], routes: [{ cluster: shared }] }]
  - name: db
    address: 127.0.0.1:8082
    protocol: tcp
    cluster: tcp-only
clusters:
  - { name: shared, endpoints: [10.0.0.1:80] }
  - { name: api-only, endpoints: [10.0.0.2:80] }
  - { name: tcp-only, endpoints: [10.0.0.3:80] }
  - { name: unused, endpoints: [10.0.0.4:80] }
`

func snapshot(t testing.TB, optional bool, shape string) *resources.Snapshot {
	t.Helper()
	y := strings.ReplaceAll(doc, "%OPT%", map[bool]string{true: "true", false: "false"}[optional])
	c, err := config.Parse("capfilter.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	var s *resources.Snapshot
	switch shape {
	case "static":
		s, err = translate.Translate(c)
	case "ads":
		s, err = translate.TranslateWith(c, translate.Options{ADS: true})
	case "grpc":
		s, err = translate.ForGRPC(c, translate.Options{})
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func names(s *resources.Snapshot) map[string][]string {
	out := map[string][]string{}
	for _, l := range s.Listeners {
		out["listeners"] = append(out["listeners"], l.GetName())
	}
	for _, r := range s.Routes {
		out["routes"] = append(out["routes"], r.GetName())
	}
	for _, c := range s.Clusters {
		out["clusters"] = append(out["clusters"], c.GetName())
	}
	for _, e := range s.Endpoints {
		out["endpoints"] = append(out["endpoints"], e.GetClusterName())
	}
	return out
}

func without(s capability.Set, filter string) capability.Set {
	s.Filters = slices.DeleteFunc(slices.Clone(s.Filters), func(f string) bool { return f == filter })
	return s
}

func TestFilter(t *testing.T) {
	envoy := capability.Default(capability.KindEnvoy)
	envoy.Build = "1.40.0"
	noCORS := without(envoy, translate.NameCORS)
	grpc := capability.Default(capability.KindGRPC)
	grpc.Build = "1.85.0"

	tests := []struct {
		name     string
		shape    string
		optional bool
		caps     capability.Set
		want     map[string][]string
		withheld []string // "type name: reason substring"
		noCORS   bool     // no listener or route config may mention cors
	}{
		{
			name: "client runs everything: snapshot unchanged", shape: "ads", caps: envoy,
			want: map[string][]string{
				"listeners": {"api", "web", "db"}, "routes": {"api", "web"},
				"clusters": {"shared", "api-only", "tcp-only", "unused"}, "endpoints": {"shared", "api-only", "tcp-only", "unused"},
			},
		},
		{
			name: "required filter missing withholds the listener and what only it uses", shape: "ads", caps: noCORS,
			want: map[string][]string{
				"listeners": {"web", "db"}, "routes": {"web"},
				"clusters": {"shared", "tcp-only", "unused"}, "endpoints": {"shared", "tcp-only", "unused"},
			},
			withheld: []string{
				"Listener api: requires filter envoy.filters.http.cors which node build envoy 1.40.0 lacks",
				"RouteConfiguration api: used only by withheld listeners",
				"Cluster api-only: used only by withheld listeners",
				"ClusterLoadAssignment api-only: used only by withheld listeners",
			},
		},
		{
			name: "required filter missing, inline routes", shape: "static", caps: noCORS,
			want: map[string][]string{
				"listeners": {"web", "db"},
				"clusters":  {"shared", "tcp-only", "unused"},
			},
			withheld: []string{
				"Listener api: requires filter envoy.filters.http.cors",
				"Cluster api-only: used only by withheld listeners",
			},
		},
		{
			name: "optional filter missing is dropped with its policies", shape: "ads", optional: true, caps: noCORS,
			want: map[string][]string{
				"listeners": {"api", "web", "db"}, "routes": {"api", "web"},
				"clusters": {"shared", "api-only", "tcp-only", "unused"}, "endpoints": {"shared", "api-only", "tcp-only", "unused"},
			},
			noCORS: true,
		},
		{
			name: "optional filter missing, inline routes", shape: "static", optional: true, caps: noCORS,
			want: map[string][]string{
				"listeners": {"api", "web", "db"},
				"clusters":  {"shared", "api-only", "tcp-only", "unused"},
			},
			noCORS: true,
		},
		{
			name: "gRPC shape passes the gRPC set unchanged", shape: "grpc", optional: true, caps: grpc,
			want: map[string][]string{
				"listeners": {"api.svc", "web.svc"}, "routes": {"api", "web"},
				"clusters": {"shared", "api-only"}, "endpoints": {"shared", "api-only"},
			},
			noCORS: true,
		},
		{
			name: "gRPC set on the Envoy shape withholds cors and tcp-free listeners stay", shape: "ads", caps: grpc,
			want: map[string][]string{
				"listeners": {"web", "db"}, "routes": {"web"},
				"clusters": {"shared", "tcp-only", "unused"}, "endpoints": {"shared", "tcp-only", "unused"},
			},
			withheld: []string{
				"Listener api: requires filter envoy.filters.http.cors which node build grpc 1.85.0 lacks",
				"RouteConfiguration api: used only by withheld listeners",
				"Cluster api-only: used only by withheld listeners",
				"ClusterLoadAssignment api-only: used only by withheld listeners",
			},
		},
		{
			name: "empty set runs nothing HTTP", shape: "ads", optional: true, caps: capability.Set{},
			want: map[string][]string{
				"listeners": {"db"},
				"clusters":  {"tcp-only", "unused"}, "endpoints": {"tcp-only", "unused"},
			},
			withheld: []string{
				"Listener api: requires filter envoy.filters.http.fault which node build unknown lacks",
				"Listener web: requires filter envoy.filters.http.router which node build unknown lacks",
				"RouteConfiguration api: used only",
				"RouteConfiguration web: used only",
				"Cluster shared: used only",
				"Cluster api-only: used only",
				"ClusterLoadAssignment shared: used only",
				"ClusterLoadAssignment api-only: used only",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := snapshot(t, tt.optional, tt.shape)
			before := in.Hash()
			out, withheld := Filter(in, tt.caps)
			if in.Hash() != before {
				t.Fatal("Filter modified its input")
			}
			if err := out.Validate(); err != nil {
				t.Fatalf("filtered snapshot is invalid: %v", err)
			}
			got := names(out)
			for _, k := range []string{"listeners", "routes", "clusters", "endpoints"} {
				if !slices.Equal(got[k], tt.want[k]) {
					t.Errorf("%s = %v, want %v", k, got[k], tt.want[k])
				}
			}
			if len(withheld) != len(tt.withheld) {
				t.Fatalf("withheld = %+v, want %d entries", withheld, len(tt.withheld))
			}
			for i, w := range withheld {
				head, reason, _ := strings.Cut(tt.withheld[i], ": ")
				typ, name, _ := strings.Cut(head, " ")
				if !strings.HasSuffix(w.TypeURL, "."+typ) || w.Name != name || !strings.Contains(w.Reason, reason) {
					t.Errorf("withheld[%d] = %+v, want %s %s with reason %q", i, w, typ, name, reason)
				}
			}
			if len(tt.withheld) == 0 && before != out.Hash() && !tt.noCORS {
				t.Error("nothing was withheld or dropped, yet the snapshot changed")
			}
			if tt.noCORS {
				if dump, _ := out.MarshalJSON(); strings.Contains(string(dump), "cors") {
					t.Error("a dropped optional filter or its policy is still in the snapshot")
				}
			}
		})
	}
}

func TestFilterSharesUnchangedResources(t *testing.T) {
	in := snapshot(t, true, "ads")
	out, _ := Filter(in, without(capability.Default(capability.KindEnvoy), translate.NameCORS))
	if out.Listeners[0] == in.Listeners[0] {
		t.Error("listener api changed but was not copied")
	}
	if out.Listeners[1] != in.Listeners[1] || out.Clusters[0] != in.Clusters[0] {
		t.Error("unchanged resources were copied")
	}
}

func TestFilterMatchesByConfigType(t *testing.T) {
	in := snapshot(t, false, "ads")
	// Rename the cors filter: the client still knows it by its type.
	l := in.Listeners[0]
	m := &hcmv3.HttpConnectionManager{}
	if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(m); err != nil {
		t.Fatal(err)
	}
	m.HttpFilters[0].Name = "my-cors"
	a, err := resources.NewAny(m)
	if err != nil {
		t.Fatal(err)
	}
	l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().Value = a.Value
	out, withheld := Filter(in, capability.Default(capability.KindEnvoy))
	if len(withheld) != 0 || len(out.Listeners) != 3 {
		t.Errorf("withheld %+v for a filter the client has under its canonical name", withheld)
	}
}

func TestCanonicalName(t *testing.T) {
	tests := []struct{ name, typeURL, want string }{
		{name: "http", typeURL: "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors", want: "envoy.filters.http.cors"},
		{name: "network", typeURL: "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", want: "envoy.filters.network.tcp_proxy"},
		{name: "other", typeURL: "type.googleapis.com/acme.Widget", want: ""},
		{name: "truncated", typeURL: "envoy.extensions.filters.http.cors", want: ""},
		{name: "empty", typeURL: "", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := canonicalName(tt.typeURL); got != tt.want {
				t.Errorf("canonicalName(%q) = %q, want %q", tt.typeURL, got, tt.want)
			}
		})
	}
}

func TestFilterNil(t *testing.T) {
	if s, w := Filter(nil, capability.Set{}); s != nil || w != nil {
		t.Error("Filter(nil) returned something")
	}
}

func BenchmarkFilter(b *testing.B) {
	envoy := capability.Default(capability.KindEnvoy)
	for _, bm := range []struct {
		name string
		caps capability.Set
	}{
		{"unchanged", envoy},
		{"drop-optional", without(envoy, translate.NameCORS)},
	} {
		in := snapshot(b, true, "ads")
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Filter(in, bm.caps)
			}
		})
	}
}
