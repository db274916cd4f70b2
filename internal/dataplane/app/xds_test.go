package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/omnirelay/omnirelay/internal/dataplane/lkg"
	"github.com/omnirelay/omnirelay/internal/dataplane/xdsclient"
	"github.com/omnirelay/omnirelay/internal/shared/capability"
	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
	"github.com/omnirelay/omnirelay/internal/shared/translate"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

const nodeID = "edge-1"

// controlPlane is go-control-plane's own ADS server and snapshot cache on
// 127.0.0.1: what an OmniRelay proxy must work with besides MeshKit.
type controlPlane struct {
	addr  string
	cache cachev3.SnapshotCache
	g     *grpc.Server
	nacks chan string
	once  sync.Once
}

func startControlPlane(t *testing.T, addr string) *controlPlane {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cp := &controlPlane{addr: ln.Addr().String(), cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil), nacks: make(chan string, 1024)}
	note := func(detail string) {
		if detail != "" {
			select {
			case cp.nacks <- detail:
			default:
			}
		}
	}
	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
			note(r.GetErrorDetail().GetMessage())
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			note(r.GetErrorDetail().GetMessage())
			return nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := serverv3.NewServer(ctx, cp.cache, cb)
	cp.g = grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(cp.g, srv)
	go func() { _ = cp.g.Serve(ln) }()
	t.Cleanup(func() { cp.stop(); cancel() })
	return cp
}

func (cp *controlPlane) stop() { cp.once.Do(cp.g.Stop) }

// set publishes a snapshot translated from YAML the way MeshKit shapes it
// for ADS (RDS and EDS); extra clusters are appended as they are.
func (cp *controlPlane) set(t *testing.T, version, y string, extra ...*clusterv3.Cluster) {
	t.Helper()
	s := adsSnapshot(t, y)
	rs := map[resourcev3.Type][]types.Resource{}
	for _, l := range s.Listeners {
		rs[resourcev3.ListenerType] = append(rs[resourcev3.ListenerType], l)
	}
	for _, r := range s.Routes {
		rs[resourcev3.RouteType] = append(rs[resourcev3.RouteType], r)
	}
	for _, c := range append(s.Clusters, extra...) {
		rs[resourcev3.ClusterType] = append(rs[resourcev3.ClusterType], c)
	}
	for _, e := range s.Endpoints {
		rs[resourcev3.EndpointType] = append(rs[resourcev3.EndpointType], e)
	}
	snap, err := cachev3.NewSnapshot(version, rs)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), nodeID, snap); err != nil {
		t.Fatal(err)
	}
}

func adsSnapshot(t *testing.T, y string) *resources.Snapshot {
	t.Helper()
	c, err := config.Parse("xds.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	s, err := translate.TranslateWith(c, translate.Options{ADS: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const meshTmpl = `
listeners:
  - name: web
    address: LADDR
    protocol: http
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { path_prefix: / }
            cluster: CLUSTER
clusters:
  - { name: a, endpoints: [AADDR] }
  - { name: b, endpoints: [BADDR] }
`

// mesh renders meshTmpl: the listener at laddr routes to cluster, whose
// endpoints are a and b.
func mesh(laddr, cluster, a, b string) string {
	return strings.NewReplacer("LADDR", laddr, "CLUSTER", cluster, "AADDR", a, "BADDR", b).Replace(meshTmpl)
}

func backend(t *testing.T, name string) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, name) }))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

func startXDSProxy(t *testing.T, xo XDSOptions) *Proxy {
	t.Helper()
	xo.NodeID = nodeID
	if xo.LKGAfter == 0 {
		xo.LKGAfter = 500 * time.Millisecond
	}
	xo.Backoff = xdsclient.Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond}
	p, err := Start(Options{XDS: &xo, AdminAddress: "127.0.0.1:0", DrainTimeout: time.Second,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	return p
}

var httpClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func get(url string) (int, string) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func serves(t *testing.T, laddr, want string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, "proxy serves "+want, func() (bool, string) {
		code, body := get("http://" + laddr + "/")
		return code == 200 && body == want, fmt.Sprint(code, " ", body)
	})
}

func ready(p *Proxy) (int, string) { return get("http://" + p.Admin.Addr().String() + "/ready") }

func metric(t *testing.T, p *Proxy, line string) bool {
	t.Helper()
	_, body := get("http://" + p.Admin.Addr().String() + "/metrics")
	return strings.Contains(body, line)
}

// TestXDSConfigLifecycle drives a proxy from go-control-plane over real ADS
// streams (SotW and delta): first config, a route swap, an EDS endpoint
// change, an invalid cluster NACKed by name while the old config serves,
// and recovery.
func TestXDSConfigLifecycle(t *testing.T) {
	for _, sotw := range []bool{false, true} {
		t.Run(map[bool]string{false: "delta", true: "sotw"}[sotw], func(t *testing.T) {
			a, b, c := backend(t, "A"), backend(t, "B"), backend(t, "C")
			cp := startControlPlane(t, "127.0.0.1:0")
			laddr := testutil.Addr(t)
			p := startXDSProxy(t, XDSOptions{Address: cp.addr, SotW: sotw})
			if code, body := ready(p); code != http.StatusServiceUnavailable {
				t.Fatalf("/ready before any config = %d %q, want 503", code, body)
			}

			cp.set(t, "1", mesh(laddr, "a", a, b))
			serves(t, laddr, "A")
			if code, body := ready(p); code != 200 || !strings.Contains(body, "from xds:") {
				t.Fatalf("/ready = %d %q", code, body)
			}

			cp.set(t, "2", mesh(laddr, "b", a, b)) // route swap
			serves(t, laddr, "B")

			cp.set(t, "3", mesh(laddr, "b", a, c)) // EDS: b's endpoint changes
			serves(t, laddr, "C")

			bad := &clusterv3.Cluster{Name: "bad", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
				ConnectTimeout: durationpb.New(time.Second), LbPolicy: clusterv3.Cluster_CLUSTER_PROVIDED}
			cp.set(t, "4", mesh(laddr, "b", a, c), bad)
			select {
			case d := <-cp.nacks:
				if !strings.Contains(d, `"bad"`) {
					t.Fatalf("NACK detail %q does not name the cluster", d)
				}
				t.Logf("NACK: %s", d)
			case <-time.After(10 * time.Second):
				t.Fatal("invalid cluster not NACKed")
			}
			serves(t, laddr, "C") // version 3 keeps serving
			// go-control-plane re-sends a NACKed version at once; the
			// client answers each re-send later than the last, so the pair
			// exchanges a handful of messages a second, not thousands.
			time.Sleep(time.Second)
			if n := len(cp.nacks); n > 10 {
				t.Fatalf("%d NACKs in a second: NACK storm", n)
			} else {
				t.Logf("%d NACKs in the second after the first", n)
			}
			if !metric(t, p, `omnirelay_xds_updates_total{result="nack",type="cds"}`) {
				t.Fatal("no cds nack counted")
			}

			cp.set(t, "5", mesh(laddr, "a", a, c))
			serves(t, laddr, "A")
			if !metric(t, p, "omnirelay_xds_connected 1") || !metric(t, p, `omnirelay_config_source{source="xds"} 1`) {
				t.Fatal("xds metrics not set")
			}
		})
	}
}

// TestXDSReconnect: the control plane restarts under a running proxy; the
// proxy reconnects and takes the new config.
func TestXDSReconnect(t *testing.T) {
	for _, sotw := range []bool{false, true} {
		t.Run(map[bool]string{false: "delta", true: "sotw"}[sotw], func(t *testing.T) {
			a, b := backend(t, "A"), backend(t, "B")
			cp := startControlPlane(t, "127.0.0.1:0")
			laddr := testutil.Addr(t)
			cp.set(t, "1", mesh(laddr, "a", a, b))
			p := startXDSProxy(t, XDSOptions{Address: cp.addr, SotW: sotw})
			serves(t, laddr, "A")
			cp.stop()
			testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, "disconnect seen", func() (bool, string) {
				st := p.XDS.Status()
				return !st.Connected, fmt.Sprintf("%+v", st)
			})
			serves(t, laddr, "A") // the running config stays
			cp2 := startControlPlane(t, cp.addr)
			cp2.set(t, "2", mesh(laddr, "b", a, b))
			serves(t, laddr, "B")
		})
	}
}

// TestXDSFailover: a proxy given two control plane replicas moves to the
// second when the first dies, and follows the second's changes.
func TestXDSFailover(t *testing.T) {
	a, b := backend(t, "A"), backend(t, "B")
	cp1, cp2 := startControlPlane(t, "127.0.0.1:0"), startControlPlane(t, "127.0.0.1:0")
	laddr := testutil.Addr(t)
	for _, cp := range []*controlPlane{cp1, cp2} {
		cp.set(t, "1", mesh(laddr, "a", a, b))
	}
	p := startXDSProxy(t, XDSOptions{Address: cp1.addr + "," + cp2.addr})
	serves(t, laddr, "A")
	if st := p.XDS.Status(); st.Address != cp1.addr {
		t.Fatalf("connected to %s, want the first replica %s", st.Address, cp1.addr)
	}
	cp1.stop()
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, "moved to the second replica", func() (bool, string) {
		st := p.XDS.Status()
		return st.Connected && st.Address == cp2.addr, fmt.Sprintf("%+v", st)
	})
	serves(t, laddr, "A")
	cp2.set(t, "2", mesh(laddr, "b", a, b))
	serves(t, laddr, "B")
}

// TestXDSLastKnownGood: a proxy that ran from a control plane restarts while
// it is down, serves from last-known-good and says so, then takes the
// control plane's config when it comes back (reconnect).
func TestXDSLastKnownGood(t *testing.T) {
	a, b := backend(t, "A"), backend(t, "B")
	dir := t.TempDir()
	cp := startControlPlane(t, "127.0.0.1:0")
	laddr := testutil.Addr(t)
	cp.set(t, "1", mesh(laddr, "a", a, b))
	p := startXDSProxy(t, XDSOptions{Address: cp.addr, LKGDir: dir})
	serves(t, laddr, "A")
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, "lkg written", func() (bool, string) {
		_, _, err := lkg.Load(dir)
		return err == nil, fmt.Sprint(err)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	cp.stop()

	p2 := startXDSProxy(t, XDSOptions{Address: cp.addr, LKGDir: dir})
	serves(t, laddr, "A")
	code, body := ready(p2)
	if code != 200 || !strings.Contains(body, "ready (last-known-good; control plane unreachable)") {
		t.Fatalf("/ready = %d %q", code, body)
	}
	if !metric(t, p2, `omnirelay_config_source{source="lkg"} 1`) {
		t.Fatal("config source metric is not lkg")
	}

	cp2 := startControlPlane(t, cp.addr)
	cp2.set(t, "2", mesh(laddr, "b", a, b))
	serves(t, laddr, "B")
	code, body = ready(p2)
	if code != 200 || strings.Contains(body, "last-known-good") {
		t.Fatalf("/ready after the control plane returned = %d %q", code, body)
	}
	if st := p2.XDS.Status(); st.FromLKG || !st.Connected {
		t.Fatalf("status %+v", st)
	}
}

// TestXDSLastKnownGoodCorrupt: a damaged LKG file is rejected with a clear
// error; no listener starts from it and /ready stays 503.
func TestXDSLastKnownGoodCorrupt(t *testing.T) {
	a, b := backend(t, "A"), backend(t, "B")
	dir := t.TempDir()
	laddr := testutil.Addr(t)
	snap := adsSnapshot(t, mesh(laddr, "a", a, b))
	var rs []*discoveryv3.Resource
	for _, l := range snap.Listeners {
		body, _ := resources.NewAny(l)
		rs = append(rs, &discoveryv3.Resource{Name: l.GetName(), Resource: body})
	}
	if err := lkg.Save(dir, "1", rs); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, lkg.FileName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x40
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startXDSProxy(t, XDSOptions{Address: testutil.Addr(t), LKGDir: dir})
	testutil.Eventually(t, 10*time.Second, 20*time.Millisecond, "LKG rejected", func() (bool, string) {
		st := p.XDS.Status()
		return strings.Contains(st.LKGError, "corrupt"), st.LKGError
	})
	if code, body := ready(p); code != http.StatusServiceUnavailable {
		t.Fatalf("/ready = %d %q, want 503", code, body)
	}
	if l := p.ListenerAddr("web"); l != nil {
		t.Fatalf("listener started from a corrupt LKG at %v", l)
	}
}

// TestXDSTrustRoot: with --trust-root, go-control-plane's unsigned
// resources are NACKed as unsigned and nothing is applied.
func TestXDSTrustRoot(t *testing.T) {
	pub, _, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "root.pub")
	if err := signing.WritePublicKey(root, pub); err != nil {
		t.Fatal(err)
	}
	a, b := backend(t, "A"), backend(t, "B")
	cp := startControlPlane(t, "127.0.0.1:0")
	laddr := testutil.Addr(t)
	cp.set(t, "1", mesh(laddr, "a", a, b))
	p := startXDSProxy(t, XDSOptions{Address: cp.addr, TrustRoot: root})
	select {
	case d := <-cp.nacks:
		if !strings.Contains(d, "unsigned") {
			t.Fatalf("NACK %q", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("unsigned config not NACKed")
	}
	if code, body := ready(p); code != http.StatusServiceUnavailable {
		t.Fatalf("/ready = %d %q, want 503", code, body)
	}
	if _, err := Start(Options{XDS: &XDSOptions{Address: cp.addr, NodeID: "x", TrustRoot: filepath.Join(t.TempDir(), "missing.pub")},
		AdminAddress: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "trust root") {
		t.Fatalf("missing trust root file: err = %v", err)
	}
}

func TestCapabilities(t *testing.T) {
	tests := []struct {
		name, configType, want string
	}{
		{name: "cors", configType: "envoy.extensions.filters.http.cors.v3.Cors", want: "envoy.filters.http.cors"},
		{name: "local rate limit", configType: "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit", want: "envoy.filters.http.local_ratelimit"},
		{name: "not envoy", configType: "omnirelay.filters.v1.Thing", want: "omnirelay.filters.v1.Thing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := filterName(tc.configType); got != tc.want {
				t.Fatalf("filterName(%q) = %q, want %q", tc.configType, got, tc.want)
			}
		})
	}
	reg, err := NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	caps := Capabilities("1.2.3", reg)
	for _, f := range []string{"envoy.filters.http.router", "envoy.filters.network.tcp_proxy", "envoy.filters.http.fault", "envoy.filters.http.header_mutation"} {
		if !caps.Has(f) {
			t.Errorf("capabilities lack %s: %v", f, caps.Filters)
		}
	}
	if caps.Build != "1.2.3" || caps.Kind != "omnirelay" {
		t.Fatalf("caps %+v", caps)
	}
	// What the control plane reads back from the Node the client sends.
	node := xdsclient.New(xdsclient.Options{NodeID: "n", Capabilities: caps}).Node()
	back := capability.FromNode(node)
	if back.Fingerprint() != caps.Fingerprint() || node.GetId() != "n" {
		t.Fatalf("node %v reads back as %+v, want %+v", node, back, caps)
	}
}
