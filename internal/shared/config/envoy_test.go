package config_test

import (
	"os"
	"testing"

	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/translate"
)

// TestLoadEnvoyMatchesTranslation loads an Envoy bootstrap written by hand to
// be what translate emits for sample.yaml, and checks both give the same
// resources.
func TestLoadEnvoyMatchesTranslation(t *testing.T) {
	data, err := os.ReadFile("testdata/envoy-sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !config.IsEnvoyFormat(data) {
		t.Fatal("IsEnvoyFormat(envoy-sample.yaml) = false")
	}
	fromEnvoy, admin, err := config.LoadEnvoy("envoy-sample.yaml", data)
	if err != nil {
		t.Fatalf("LoadEnvoy: %v", err)
	}
	if admin.EffectiveAddress() != "127.0.0.1:9901" {
		t.Errorf("admin = %q", admin.Address)
	}
	c, err := config.Load("testdata/sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	translated, err := translate.Translate(c)
	if err != nil {
		t.Fatal(err)
	}
	a, err := fromEnvoy.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	b, err := translated.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Errorf("Envoy bootstrap and translation differ\nenvoy:\n%s\ntranslated:\n%s", a, b)
	}
	if fromEnvoy.Hash() != translated.Hash() {
		t.Errorf("hashes differ: %s vs %s", fromEnvoy.Hash(), translated.Hash())
	}
}

func TestLoadEnvoyJSON(t *testing.T) {
	doc := `{"static_resources": {"clusters": [{"name": "a", "type": "STATIC", "connect_timeout": "1s",
	  "load_assignment": {"cluster_name": "a", "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
	  {"socket_address": {"address": "127.0.0.1", "port_value": 9000}}}}]}]}}]}}`
	if !config.IsEnvoyFormat([]byte(doc)) {
		t.Fatal("IsEnvoyFormat(JSON) = false")
	}
	snap, admin, err := config.LoadEnvoy("b.json", []byte(doc))
	if err != nil {
		t.Fatalf("LoadEnvoy: %v", err)
	}
	if len(snap.Clusters) != 1 || admin.Address != "" || admin.EffectiveAddress() != config.DefaultAdminAddress {
		t.Errorf("snap = %v, admin = %+v", snap.Clusters, admin)
	}
}

func TestLoadEnvoyErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{
			name: "unknown field",
			doc:  "static_resources:\n  clusterz: []\n",
			want: `bad.yaml: unknown field "clusterz"`,
		},
		{
			name: "unsupported extension",
			doc: "static_resources:\n  listeners:\n  - name: l\n    address: { socket_address: { address: 127.0.0.1, port_value: 80 } }\n" +
				"    filter_chains: [{ filters: [{ name: lua, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua } }] }]\n",
			want: `bad.yaml: unable to resolve "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua": "not found" (an extension OmniRelay does not support; see docs/envoy-support.md)`,
		},
		{
			name: "dangling cluster reference",
			doc: "static_resources:\n  listeners:\n  - name: l\n    address: { socket_address: { address: 127.0.0.1, port_value: 80 } }\n" +
				"    filter_chains: [{ filters: [{ name: envoy.filters.network.tcp_proxy, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: l, cluster: nope } }] }]\n",
			want: "bad.yaml: invalid static_resources:\n" + `listener "l": filter_chains[0].filters[0] (envoy.filters.network.tcp_proxy): cluster: unknown cluster "nope"`,
		},
		{
			name: "generated validation",
			doc:  "static_resources:\n  clusters: [{ name: a, connect_timeout: -1s }]\n",
			want: "bad.yaml: invalid static_resources:\n" + `cluster "a": invalid Cluster.ConnectTimeout: value must be greater than 0s`,
		},
		{
			name: "dynamic resources",
			doc:  "static_resources: {}\ndynamic_resources: { ads_config: { api_type: GRPC } }\n",
			want: "bad.yaml: dynamic_resources is not supported in a static config (connect to the xDS server instead)",
		},
		{
			name: "yaml syntax",
			doc:  "static_resources: { listeners: [\n",
			want: "bad.yaml: 1:32: sequence end token ']' not found",
		},
		{
			name: "duplicate key",
			doc:  "static_resources: {}\nstatic_resources: {}\n",
			want: `bad.yaml: 2:1: duplicate key "static_resources" (first at line 1, column 1)`,
		},
		{
			name: "admin pipe",
			doc:  "static_resources: {}\nadmin: { address: { pipe: { path: /tmp/a } } }\n",
			want: "bad.yaml: admin.address: only socket_address is supported",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := config.LoadEnvoy("bad.yaml", []byte(tt.doc))
			if err == nil {
				t.Fatalf("LoadEnvoy succeeded, want %s", tt.want)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error\ngot:  %s\nwant: %s", got, tt.want)
			}
		})
	}
}

func TestIsEnvoyFormat(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want bool
	}{
		{"omnirelay", "listeners: []\n", false},
		{"envoy yaml", "admin: {}\nstatic_resources: {}\n", true},
		{"envoy json camelCase", `{"staticResources": {}}`, true},
		{"nested key only", "listeners: [{ static_resources: 1 }]\n", false},
		{"garbage", "{{{", false},
		{"empty", "", false},
		{"list", "- static_resources\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := config.IsEnvoyFormat([]byte(tt.doc)); got != tt.want {
				t.Errorf("IsEnvoyFormat = %v, want %v", got, tt.want)
			}
		})
	}
}
