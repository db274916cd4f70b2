package resources

import (
	"encoding/json"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := NewAny(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func addr(port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func router(t testing.TB) []*hcmv3.HttpFilter {
	return []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}}}
}

// httpListener routes every request to cluster, inline or through rds.
func httpListener(t testing.TB, name string, port uint32, cluster, rds string) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{StatPrefix: name, HttpFilters: router(t)}
	if rds != "" {
		hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: rds,
			ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		}}
	} else {
		hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: routeConfig(name, cluster)}
	}
	return &listenerv3.Listener{
		Name:    name,
		Address: addr(port),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, hcm)},
		}}}},
	}
}

func routeConfig(name, cluster string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{
		Name: "all", Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
		}},
	}}}
}

func tcpListener(t testing.TB, name string, port uint32, cluster string) *listenerv3.Listener {
	tp := &tcpv3.TcpProxy{StatPrefix: name, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}}
	return &listenerv3.Listener{
		Name:    name,
		Address: addr(port),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, tp)},
		}}}},
	}
}

func staticCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(1e9),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr(9000)}}}},
		}}},
	}
}

func edsCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(1e9),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		}},
	}
}

func tlsCluster(t testing.TB, name, secret string) *clusterv3.Cluster {
	c := staticCluster(name)
	ut := &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: secret}},
	}}
	c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, ut)}}
	return c
}

func secret(name string) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/certs/a.crt"}},
		PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "-----BEGIN PRIVATE KEY-----secret"}},
	}}}
}

func TestValidate(t *testing.T) {
	badHCM := httpListener(t, "bad", 8082, "a", "")
	// An HCM without stat_prefix fails its own ValidateAll, which the
	// Listener's ValidateAll never reaches (it sits in an Any).
	hcm := &hcmv3.HttpConnectionManager{HttpFilters: router(t), RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: routeConfig("x", "a")}}
	badHCM.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, hcm)}

	tests := []struct {
		name    string
		snap    *Snapshot
		wantErr []string // substrings; empty means valid
	}{
		{
			name: "valid inline, rds, tcp, eds and secret",
			snap: &Snapshot{
				Listeners: []*listenerv3.Listener{httpListener(t, "web", 8080, "a", ""), httpListener(t, "api", 8081, "", "api-routes"), tcpListener(t, "db", 5432, "b")},
				Routes:    []*routev3.RouteConfiguration{routeConfig("api-routes", "b")},
				Clusters:  []*clusterv3.Cluster{staticCluster("a"), edsCluster("b"), tlsCluster(t, "c", "cert")},
				Endpoints: []*endpointv3.ClusterLoadAssignment{{ClusterName: "b"}},
				Secrets:   []*tlsv3.Secret{secret("cert")},
			},
		},
		{
			name:    "route to unknown cluster",
			snap:    &Snapshot{Listeners: []*listenerv3.Listener{httpListener(t, "web", 8080, "nope", "")}, Clusters: []*clusterv3.Cluster{staticCluster("a")}},
			wantErr: []string{`listener "web": filter_chains[0].filters[0] (envoy.filters.network.http_connection_manager): route_config.virtual_hosts[0].routes[0].route.cluster: unknown cluster "nope"`},
		},
		{
			name:    "rds name missing",
			snap:    &Snapshot{Listeners: []*listenerv3.Listener{httpListener(t, "web", 8080, "", "gone")}},
			wantErr: []string{`rds.route_config_name: unknown route configuration "gone"`},
		},
		{
			name:    "tcp proxy to unknown cluster",
			snap:    &Snapshot{Listeners: []*listenerv3.Listener{tcpListener(t, "db", 5432, "pg")}},
			wantErr: []string{`listener "db": filter_chains[0].filters[0] (envoy.filters.network.tcp_proxy): cluster: unknown cluster "pg"`},
		},
		{
			name:    "rds route config to unknown cluster",
			snap:    &Snapshot{Routes: []*routev3.RouteConfiguration{routeConfig("r", "x")}},
			wantErr: []string{`route configuration "r": virtual_hosts[0].routes[0].route.cluster: unknown cluster "x"`},
		},
		{
			name:    "eds without load assignment",
			snap:    &Snapshot{Clusters: []*clusterv3.Cluster{edsCluster("b")}},
			wantErr: []string{`cluster "b": eds_cluster_config: no cluster load assignment named "b"`},
		},
		{
			name:    "static secret missing",
			snap:    &Snapshot{Clusters: []*clusterv3.Cluster{tlsCluster(t, "c", "cert")}},
			wantErr: []string{`cluster "c": transport_socket.typed_config(envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext).common_tls_context.tls_certificate_sds_secret_configs[0].name: unknown secret "cert"`},
		},
		{
			name:    "duplicate and empty names",
			snap:    &Snapshot{Clusters: []*clusterv3.Cluster{staticCluster("a"), staticCluster("a"), staticCluster("")}},
			wantErr: []string{`cluster "a": name is used twice`, `cluster [2]: name is empty`},
		},
		{
			name:    "generated validation of the resource",
			snap:    &Snapshot{Clusters: []*clusterv3.Cluster{{Name: "neg", ConnectTimeout: durationpb.New(-1)}}},
			wantErr: []string{`cluster "neg": invalid Cluster.ConnectTimeout`},
		},
		{
			name:    "generated validation inside an Any",
			snap:    &Snapshot{Listeners: []*listenerv3.Listener{badHCM}, Clusters: []*clusterv3.Cluster{staticCluster("a")}},
			wantErr: []string{`listener "bad": filter_chains[0].filters[0].typed_config(envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager): invalid HttpConnectionManager.StatPrefix`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.snap.Validate()
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors containing %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() =\n%v\nwant it to contain\n%s", err, w)
				}
			}
		})
	}
}

func TestMarshalJSONRedactsAndIsStable(t *testing.T) {
	snap := &Snapshot{
		Listeners: []*listenerv3.Listener{httpListener(t, "web", 8080, "a", "")},
		Clusters:  []*clusterv3.Cluster{staticCluster("a")},
		Secrets:   []*tlsv3.Secret{secret("cert")},
	}
	a, err := snap.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	b, err := snap.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Error("MarshalJSON is not stable")
	}
	if !json.Valid(a) {
		t.Fatalf("not JSON: %s", a)
	}
	s := string(a)
	if strings.Contains(s, "BEGIN PRIVATE KEY") {
		t.Errorf("private key leaked into the dump:\n%s", s)
	}
	for _, want := range []string{`"inlineString": "[redacted]"`, `"filename": "/certs/a.crt"`, `envoy.admin.v3.ListenersConfigDump`, `"name": "web"`} {
		if !strings.Contains(s, want) {
			t.Errorf("dump lacks %s", want)
		}
	}
	// Redaction works on a copy.
	if got := snap.Secrets[0].GetTlsCertificate().GetPrivateKey().GetInlineString(); !strings.Contains(got, "secret") {
		t.Errorf("MarshalJSON modified the snapshot: %q", got)
	}
}

func TestHash(t *testing.T) {
	build := func(cluster string) *Snapshot {
		return &Snapshot{
			Listeners: []*listenerv3.Listener{httpListener(t, "web", 8080, cluster, "")},
			Clusters:  []*clusterv3.Cluster{staticCluster(cluster)},
		}
	}
	tests := []struct {
		name  string
		a, b  *Snapshot
		equal bool
	}{
		{name: "same content, separately built", a: build("a"), b: build("a"), equal: true},
		{name: "different content", a: build("a"), b: build("b"), equal: false},
		{name: "empty vs empty", a: &Snapshot{}, b: &Snapshot{}, equal: true},
		{
			name:  "resource moved to another type",
			a:     &Snapshot{Routes: []*routev3.RouteConfiguration{routeConfig("x", "a")}},
			b:     &Snapshot{Listeners: []*listenerv3.Listener{}, Routes: nil},
			equal: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ha, hb := tt.a.Hash(), tt.b.Hash()
			if len(ha) != 32 {
				t.Errorf("hash %q is not 32 hex digits", ha)
			}
			if (ha == hb) != tt.equal {
				t.Errorf("Hash equal = %v, want %v (%s vs %s)", ha == hb, tt.equal, ha, hb)
			}
		})
	}
}

func BenchmarkHash(b *testing.B) {
	snap := &Snapshot{Listeners: []*listenerv3.Listener{httpListener(b, "web", 8080, "a", "")}, Clusters: []*clusterv3.Cluster{staticCluster("a")}}
	b.ReportAllocs()
	for b.Loop() {
		_ = snap.Hash()
	}
}

func BenchmarkValidate(b *testing.B) {
	snap := &Snapshot{Listeners: []*listenerv3.Listener{httpListener(b, "web", 8080, "a", "")}, Clusters: []*clusterv3.Cluster{staticCluster("a")}}
	b.ReportAllocs()
	for b.Loop() {
		if err := snap.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}
