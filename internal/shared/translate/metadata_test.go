package translate

import (
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// TestMetadata: route and cluster metadata reach xDS as Envoy's
// metadata.filter_metadata, typed as YAML has them.
func TestMetadata(t *testing.T) {
	c, err := config.Parse("m.yaml", []byte(`
listeners:
  - name: l
    address: 127.0.0.1:80
    virtual_hosts:
      - name: v
        routes: [{ cluster: a, metadata: { filter_metadata: { envoy.filters.http.wasm: { auth: cookie, n: 2, on: true, nested: { k: v } } } } }]
clusters:
  - name: a
    endpoints: [127.0.0.1:9]
    metadata: { filter_metadata: { location: { region: ap-northeast-1 } } }
`))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := Translate(c)
	if err != nil {
		t.Fatal(err)
	}
	rt := hcmOf(t, snap.Listeners[0], 0).GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0]
	f := rt.GetMetadata().GetFilterMetadata()["envoy.filters.http.wasm"].GetFields()
	if f["auth"].GetStringValue() != "cookie" || f["n"].GetNumberValue() != 2 || !f["on"].GetBoolValue() ||
		f["nested"].GetStructValue().GetFields()["k"].GetStringValue() != "v" {
		t.Errorf("route metadata = %v", rt.GetMetadata())
	}
	cm := snap.Clusters[0].GetMetadata().GetFilterMetadata()["location"].GetFields()
	if cm["region"].GetStringValue() != "ap-northeast-1" {
		t.Errorf("cluster metadata = %v", snap.Clusters[0].GetMetadata())
	}

	_, err = config.Parse("m.yaml", []byte(`
listeners: [{ name: l, address: 127.0.0.1:80, virtual_hosts: [{ name: v, routes: [{ cluster: a, metadata: { filter_metadata: { "": { a: b } } } }] }] }]
clusters: [{ name: a, endpoints: [127.0.0.1:9] }]
`))
	if err == nil || !strings.Contains(err.Error(), "routes[0].metadata.filter_metadata: an empty filter name") {
		t.Fatalf("err = %v", err)
	}
}
