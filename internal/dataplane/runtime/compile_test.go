package runtime

import (
	"fmt"
	"net"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/omnirelay/omnirelay/examples"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

// compileNow is what apply does before it binds anything.
func compileNow(rt *Runtime, snap *resources.Snapshot) (*Version, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.compile(snap, snap.Hash(), "test", rt.cur.Load())
}

// Compiling a version changes nothing that runs: no socket is bound, the
// running version stays current, and unchanged clusters are the running
// ones (same objects: their health and outlier state carry over) while a
// changed one is new.
func TestCompileTouchesNothing(t *testing.T) {
	rt := newRuntime(t)
	addr := testutil.Addr(t)
	if err := rt.Apply(snapshot(t, cfg(addr, "a")), "test"); err != nil {
		t.Fatal(err)
	}
	running := rt.Current()

	other := testutil.Addr(t)
	next := strings.Replace(cfg(addr, "a"), "[127.0.0.1:2]", "[127.0.0.1:3]", 1) // cluster b changes
	next = strings.Replace(next, "clusters:", `  - { name: other, address: `+other+`, protocol: tcp, cluster: a }
clusters:`, 1)
	v, err := compileNow(rt, snapshot(t, next))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { rt.mu.Lock(); v.discard(); rt.mu.Unlock() }()

	if rt.Current() != running {
		t.Fatal("compile replaced the running version")
	}
	if rt.Listener("other") != nil {
		t.Fatal("compile started a listener")
	}
	ln, err := net.Listen("tcp", other)
	if err != nil {
		t.Fatalf("compile bound the new listener's address: %v", err)
	}
	_ = ln.Close()
	if v.Listeners["other"] == nil || v.Listeners["web"] == nil {
		t.Fatalf("compiled listeners = %v, want web and other", v.Listeners)
	}
	if v.Clusters.Get("a") != running.Clusters.Get("a") {
		t.Fatal("unchanged cluster a was rebuilt")
	}
	if b := v.Clusters.Get("b"); b == nil || b == running.Clusters.Get("b") {
		t.Fatal("changed cluster b was carried over")
	}
	if len(v.built) != 1 || v.built[0] != v.Clusters.Get("b") {
		t.Fatalf("built = %v, want cluster b only", v.built)
	}
}

// A version that does not compile is refused with an error that names the
// resource (and the field inside it), and the running version stays.
func TestCompileErrorNamesResource(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*resources.Snapshot)
		want   []string
	}{
		{
			name: "listener filter",
			mutate: func(s *resources.Snapshot) {
				s.Listeners[0].ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.proxy_protocol"}}
			},
			want: []string{`listener "web"`, "listener_filters", "proxy_protocol"},
		},
		{
			name: "cluster type",
			mutate: func(s *resources.Snapshot) {
				s.Clusters[1].ClusterDiscoveryType = &clusterv3.Cluster_ClusterType{
					ClusterType: &clusterv3.Cluster_CustomClusterType{Name: "envoy.clusters.aggregate"}}
			},
			want: []string{`cluster "b"`, "custom cluster types"},
		},
		{
			name: "secret",
			mutate: func(s *resources.Snapshot) {
				s.Secrets = append(s.Secrets, &tlsv3.Secret{Name: "empty"})
			},
			want: []string{`secret "empty"`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rt := newRuntime(t)
			addr := testutil.Addr(t)
			if err := rt.Apply(snapshot(t, cfg(addr, "a")), "test"); err != nil {
				t.Fatal(err)
			}
			running := rt.Current()
			snap := snapshot(t, cfg(addr, "b"))
			tc.mutate(snap)
			err := rt.Apply(snap, "test")
			if err == nil {
				t.Fatal("apply succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if rt.Current() != running {
				t.Fatal("a rejected version replaced the running one")
			}
		})
	}
}

// BenchmarkCompile measures compile alone (no socket, no swap): the demo
// config, and one of 1,000 routes over 100 clusters, with nothing running
// (every cluster is built, and the version discarded), and the same large
// config as a reload whose clusters are unchanged (all carried over from
// the running version: what an edit of routes costs).
func BenchmarkCompile(b *testing.B) {
	demo, err := examples.FS.ReadFile("demo.yaml")
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name   string
		yaml   string
		reload bool
	}{
		{"demo", string(demo), false},
		{"routes=1000/clusters=100", bigConfig("127.0.0.1:18080", 1000, 100, "2s"), false},
		{"routes=1000/clusters=100/reload", "", true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			rt := newRuntime(b)
			var snap *resources.Snapshot
			if !bc.reload {
				snap = snapshot(b, bc.yaml)
			} else {
				addr := testutil.Addr(b)
				if err := rt.Apply(snapshot(b, bigConfig(addr, 1000, 100, "2s")), "bench"); err != nil {
					b.Fatal(err)
				}
				snap = snapshot(b, bigConfig(addr, 1000, 100, "3s"))
			}
			id := snap.Hash()
			b.ReportAllocs()
			rt.mu.Lock()
			defer rt.mu.Unlock()
			prev := rt.cur.Load()
			for b.Loop() {
				v, err := rt.compile(snap, id, "bench", prev)
				if err != nil {
					b.Fatal(err)
				}
				if bc.reload && len(v.built) != 0 {
					b.Fatalf("%d clusters rebuilt, want all carried over", len(v.built))
				}
				v.discard()
			}
		})
	}
}

// bigConfig is one HTTP listener on addr with routes spread over 10
// virtual hosts, each route to one of clusters clusters, with a header
// match, the timeout and retries as a real edge config has.
func bigConfig(addr string, routes, clusters int, timeout string) string {
	var sb strings.Builder
	sb.WriteString("listeners:\n  - name: web\n    address: " + addr + "\n    protocol: http\n    virtual_hosts:\n")
	const vhosts = 10
	for h := range vhosts {
		fmt.Fprintf(&sb, "      - name: vh%d\n        domains: [\"vh%d.example.com\"]\n        routes:\n", h, h)
		for r := h; r < routes; r += vhosts {
			fmt.Fprintf(&sb, "          - match: { path_prefix: /svc%d/, headers: { x-tenant: \"t%d\" } }\n", r, r%7)
			fmt.Fprintf(&sb, "            cluster: c%d\n            timeout: %s\n", r%clusters, timeout)
			sb.WriteString("            retry: { attempts: 2, on: [connect-failure, 5xx] }\n")
		}
	}
	sb.WriteString("clusters:\n")
	for c := range clusters {
		fmt.Fprintf(&sb, "  - { name: c%d, endpoints: [127.0.0.1:%d, 127.0.0.1:%d] }\n", c, 10000+2*c, 10001+2*c)
	}
	return sb.String()
}
