package cluster

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/omnirelay/omnirelay/internal/dataplane/lb"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/dataplane/stats"
	"github.com/omnirelay/omnirelay/internal/dataplane/upstream"
)

func sockAddr(t *testing.T, hostport string) *corev3.Address {
	t.Helper()
	ap, err := net.ResolveTCPAddr("tcp", hostport)
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ap.IP.String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ap.Port)}}}}
}

// static is a STATIC cluster over addrs (host:port).
func static(t *testing.T, name string, addrs ...string) *clusterv3.Cluster {
	var lbes []*endpointv3.LbEndpoint
	for _, a := range addrs {
		lbes = append(lbes, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: sockAddr(t, a)}}})
	}
	return &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout: durationpb.New(2 * time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbes}}}}
}

func build(t *testing.T, c *clusterv3.Cluster, prev *Cluster, st *stats.Stats) *Cluster {
	t.Helper()
	cl, err := Build(c, nil, prev, &Env{Stats: st, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func origin(t *testing.T, name string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, name+" "+r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestRoundTripToEveryEndpoint: a static cluster over two origins on
// 127.0.0.1 picks both (round robin) and its HTTP/1.1 pool carries a
// request to each.
func TestRoundTripToEveryEndpoint(t *testing.T) {
	a, b := origin(t, "a"), origin(t, "b")
	cl := build(t, static(t, "web", a, b), nil, stats.New())
	seen := map[string]bool{}
	for range 4 {
		ep := cl.Pick(&lb.Context{})
		if ep == nil {
			t.Fatal("no endpoint picked")
		}
		var req message.Request
		req.SetMethod("GET")
		req.SetScheme("http")
		req.SetAuthority("web")
		req.SetPath("/p")
		req.ProtoMajor, req.ProtoMinor = 1, 1
		var resp message.Response
		if err := cl.Transport(false).RoundTrip(context.Background(), ep, &req, &resp, upstream.Deadlines{}); err != nil {
			t.Fatalf("round trip to %s: %v", ep.Address, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.Close != nil {
			resp.Close()
		}
		if resp.Status != 200 {
			t.Fatalf("%s: status %d", ep.Address, resp.Status)
		}
		seen[string(body)] = true
	}
	if !seen["a /p"] || !seen["b /p"] {
		t.Fatalf("answers %v, want both origins", seen)
	}
}

// TestReportFailureFeedsMetricsAndOutlierDetection: failures reported with
// the upstream vocabulary count in the cluster's metrics and eject the host
// after consecutive gateway failures; an overflow (the proxy's own limit)
// counts for neither.
func TestReportFailureFeedsMetricsAndOutlierDetection(t *testing.T) {
	c := static(t, "od", "127.0.0.1:1", "127.0.0.1:2")
	// Envoy enforces gateway-failure ejection at 0% unless told otherwise.
	c.OutlierDetection = &clusterv3.OutlierDetection{ConsecutiveGatewayFailure: wrapperspb.UInt32(3),
		EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(100),
		Consecutive_5Xx:                    wrapperspb.UInt32(100), MaxEjectionPercent: wrapperspb.UInt32(100),
		BaseEjectionTime: durationpb.New(time.Minute)}
	st := stats.New()
	cl := build(t, c, nil, st)
	ep := cl.Endpoints[0]

	for range 5 {
		cl.ReportFailure(ep, upstream.FailOverflow)
	}
	if ep.Ejected(time.Now()) {
		t.Fatal("overflows ejected the host")
	}
	cl.ReportFailure(ep, upstream.FailConnect)
	cl.ReportFailure(ep, upstream.FailTimeout)
	if ep.Ejected(time.Now()) {
		t.Fatal("ejected after 2 of 3 gateway failures")
	}
	cl.ReportFailure(ep, upstream.FailReset)
	if !ep.Ejected(time.Now()) {
		t.Fatal("not ejected after 3 consecutive gateway failures (connect, timeout, reset)")
	}
	if cl.Endpoints[1].Ejected(time.Now()) {
		t.Fatal("the other host was ejected")
	}
	for name, want := range map[string]float64{"connect": 1, "timeout": 1, "reset": 1, "ejections": 1} {
		var got float64
		switch name {
		case "connect":
			got = count(t, cl.Stats.ConnectFailure)
		case "timeout":
			got = count(t, cl.Stats.Timeouts)
		case "reset":
			got = count(t, cl.Stats.Resets)
		case "ejections":
			got = count(t, cl.Stats.Ejections)
		}
		if got != want {
			t.Errorf("%s counted %v, want %v", name, got, want)
		}
	}
}

// TestConnect opens raw connections for the TCP proxy: to a live host, and
// a connect failure (counted) to a closed port.
func TestConnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "hello")
			_ = c.Close()
		}
	}()
	cl := build(t, static(t, "tcp", ln.Addr().String()), nil, stats.New())
	nc, release, err := cl.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(nc)
	_ = nc.Close()
	release()
	if string(b) != "hello" {
		t.Fatalf("read %q", b)
	}

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.Addr().String()
	_ = closed.Close()
	down := build(t, static(t, "down", addr), nil, stats.New())
	if _, _, err := down.Connect(context.Background()); err == nil {
		t.Fatal("connect to a closed port succeeded")
	}
	if n := count(t, down.Stats.ConnectFailure); n != 1 {
		t.Fatalf("connect failures counted %v, want 1", n)
	}
}

// TestRebuildKeepsEndpointStateAndPools: a cluster rebuilt with the same
// settings keeps its hosts' state (an ejection) and shares the previous
// version's pools; changed settings get new pools.
func TestRebuildKeepsEndpointStateAndPools(t *testing.T) {
	st := stats.New()
	c := static(t, "r", "127.0.0.1:1")
	v1 := build(t, c, nil, st)
	v1.Endpoints[0].Eject(time.Now().Add(time.Hour))
	v2 := build(t, static(t, "r", "127.0.0.1:1"), v1, st)
	if !SameSettings(v1, v2) || v2.h1 != v1.h1 {
		t.Fatal("unchanged settings: pools not shared")
	}
	if !v2.Endpoints[0].Ejected(time.Now()) {
		t.Fatal("rebuild lost the host's ejection")
	}
	changed := static(t, "r", "127.0.0.1:1")
	changed.ConnectTimeout = durationpb.New(3 * time.Second)
	v3 := build(t, changed, v2, st)
	if SameSettings(v2, v3) || v3.h1 == v2.h1 {
		t.Fatal("changed connect timeout: pools shared")
	}
}

func TestBuildRejects(t *testing.T) {
	tests := []struct {
		name string
		mod  func(c *clusterv3.Cluster)
		want string
	}{
		{"unsupported type", func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
		}, `cluster "bad": type ORIGINAL_DST is not supported`},
		{"no name", func(c *clusterv3.Cluster) { c.Name = "" }, `cluster ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := static(t, "bad", "127.0.0.1:1")
			tt.mod(c)
			_, err := Build(c, nil, nil, &Env{Stats: stats.New(), Log: slog.New(slog.DiscardHandler)})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// count reads a counter's value.
func count(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
