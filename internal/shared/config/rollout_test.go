package config

import (
	"fmt"
	"strings"
	"testing"
)

func canaryDoc(by string, percent int) string {
	return fmt.Sprintf(`listeners:
  - name: edge
    address: 127.0.0.1:8080
    filters:
      - extension: { name: stamp, package: "store:stamp@2", config: new, canary: { percent: %d, by: %s, previous_package: "store:stamp@1", previous_config: old } }
      - extension: { name: other, package: "store:other@1" }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: main }] }]
clusters: [{ name: main, endpoints: [127.0.0.1:9000] }]
`, percent, by)
}

func TestCanaryByValidation(t *testing.T) {
	tests := []struct {
		name    string
		by      string
		opts    []ParseOption
		wantErr string
	}{
		{name: "requests static", by: "requests"},
		{name: "proxies static", by: "proxies", wantErr: "canary.by: by proxies needs MeshKit"},
		{name: "proxies meshkit", by: "proxies", opts: []ParseOption{ServedByMeshKit()}},
		{name: "unknown", by: "nodes", opts: []ParseOption{ServedByMeshKit()}, wantErr: `by "nodes": want requests or proxies`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("mesh.yaml", []byte(canaryDoc(tc.by, 50)), tc.opts...)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestResolveProxyCanaries(t *testing.T) {
	c, err := Parse("mesh.yaml", []byte(canaryDoc("proxies", 30)), ServedByMeshKit())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		bucket       uint32
		pkg, cfg     string
		role         string
		side         uint32
		wantOriginal bool
	}{
		{name: "in", bucket: 0, pkg: "store:stamp@2", cfg: "new", role: "canary", side: 0},
		{name: "last in", bucket: 29, pkg: "store:stamp@2", cfg: "new", role: "canary", side: 0},
		{name: "first out", bucket: 30, pkg: "store:stamp@1", cfg: "old", role: "previous", side: 30},
		{name: "out", bucket: 99, pkg: "store:stamp@1", cfg: "old", role: "previous", side: 30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, choices := c.ResolveProxyCanaries(tc.bucket)
			x := r.Listeners[0].Filters[0].Extension
			if x.Package != tc.pkg || x.Config != tc.cfg || x.Canary != nil {
				t.Fatalf("resolved %+v, want package %s config %s and no canary", x, tc.pkg, tc.cfg)
			}
			if len(choices) != 2 || choices[0].Role != tc.role || choices[0].Package != tc.pkg || choices[1].Role != "" {
				t.Fatalf("choices %+v", choices)
			}
			if got := c.ProxyCanarySide(tc.bucket); got != tc.side {
				t.Fatalf("side %d, want %d", got, tc.side)
			}
			if c.Listeners[0].Filters[0].Extension.Canary == nil {
				t.Fatal("ResolveProxyCanaries changed the config it resolved")
			}
		})
	}
}

// A node keeps its bucket; raising the percent only adds nodes.
func TestProxyBucketMonotonic(t *testing.T) {
	in := map[string]bool{}
	for p := uint32(0); p <= 100; p += 10 {
		for i := range 200 {
			id := fmt.Sprintf("node-%d", i)
			now := InProxyCanary(ProxyBucket(id), p)
			if in[id] && !now {
				t.Fatalf("%s left the canary when the percent rose to %d", id, p)
			}
			in[id] = now
		}
	}
	n := 0
	for i := range 1000 {
		if InProxyCanary(ProxyBucket(fmt.Sprintf("node-%d", i)), 50) {
			n++
		}
	}
	if n < 400 || n > 600 {
		t.Fatalf("%d of 1000 nodes in a 50%% canary", n)
	}
}
