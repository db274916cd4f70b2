package httpconn_test

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/omnirelay/omnirelay/internal/dataplane/cluster"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
)

// direct is a route configuration answering every request with status and
// body (a direct_response), so a test can tell versions apart.
func direct(status uint32, body string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{{
		Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{{
			Name:  "direct",
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
				Status: status, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: body}}}},
		}},
	}}}
}

// gate is a filter that holds each request until release is closed, after
// telling entered.
type gate struct {
	entered chan struct{}
	release chan struct{}
}

func (g *gate) OnRequest(*filter.Stream) filter.Status {
	g.entered <- struct{}{}
	<-g.release
	return filter.Continue
}
func (g *gate) OnResponse(*filter.Stream) {}

const get = "GET /a HTTP/1.1\r\nhost: example.com\r\n\r\n"

func TestServeH1ThroughRouterToUpstream(t *testing.T) {
	up := startUpstream(t)
	p := startProxy(t, newConfig(t, routeAll("up"), []*cluster.Cluster{buildCluster(t, "up", up)}))
	c := dial(t, p.ln.Addr().String())
	for i := range 3 { // one kept-alive connection, several requests
		status, _, body := c.do("GET /a/" + string(rune('0'+i)) + " HTTP/1.1\r\nhost: example.com\r\n\r\n")
		if want := "path=/a/" + string(rune('0'+i)); status != 200 || body != want {
			t.Fatalf("request %d: %d %q, want 200 %q", i, status, body, want)
		}
	}
}

func TestNoRouteIs404(t *testing.T) {
	rc := direct(200, "x")
	rc.VirtualHosts[0].Domains = []string{"only.example.com"}
	p := startProxy(t, newConfig(t, rc, nil))
	status, _, body := dial(t, p.ln.Addr().String()).do(get)
	if status != 404 || body != "no route\n" {
		t.Fatalf("%d %q, want 404 \"no route\"", status, body)
	}
}

func TestPublishAppliesToNextRequestOfKeptAliveConnection(t *testing.T) {
	p := startProxy(t, newConfig(t, direct(200, "v1"), nil))
	c := dial(t, p.ln.Addr().String())
	if _, _, body := c.do(get); body != "v1" {
		t.Fatalf("first request: %q", body)
	}
	p.srv.Publish(newConfig(t, direct(200, "v2"), nil))
	if _, _, body := c.do(get); body != "v2" {
		t.Fatalf("request after Publish on the same connection: %q, want v2", body)
	}
}

func TestInFlightRequestFinishesOnItsVersion(t *testing.T) {
	g := &gate{entered: make(chan struct{}, 1), release: make(chan struct{})}
	p := startProxy(t, newConfig(t, direct(200, "v1"), nil, g))
	c := dial(t, p.ln.Addr().String())
	got := make(chan string, 1)
	go func() {
		_, _ = io.WriteString(c.c, get)
		got <- "sent"
	}()
	<-got
	select {
	case <-g.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("request never reached the filter")
	}
	p.srv.Publish(newConfig(t, direct(200, "v2"), nil))
	close(g.release)
	status, _, body := c.read()
	if status != 200 || body != "v1" {
		t.Fatalf("in-flight request: %d %q, want the version it started on (v1)", status, body)
	}
	if _, _, body := c.do(get); body != "v2" {
		t.Fatalf("next request: %q, want v2", body)
	}
}

func TestPublishNilClosesConnectionAfterRequest(t *testing.T) {
	p := startProxy(t, newConfig(t, direct(200, "v1"), nil))
	c := dial(t, p.ln.Addr().String())
	if _, _, body := c.do(get); body != "v1" {
		t.Fatalf("first request: %q", body)
	}
	p.srv.Publish(nil)
	_, _ = io.WriteString(c.c, get)
	_ = c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := c.br.ReadByte(); err != io.EOF {
		t.Fatalf("after the config was withdrawn the connection answered (%q, %v); want it closed", b, err)
	}
}

func TestDrainClosesIdleConnection(t *testing.T) {
	p := startProxy(t, newConfig(t, direct(200, "v1"), nil))
	c := dial(t, p.ln.Addr().String())
	if _, _, body := c.do(get); body != "v1" {
		t.Fatalf("first request: %q", body)
	}
	p.srv.Drain()
	_ = c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection after Drain: %v, want EOF", err)
	}
}

func TestMalformedRequestIs400AndCloses(t *testing.T) {
	p := startProxy(t, newConfig(t, direct(200, "v1"), nil))
	c, err := net.Dial("tcp", p.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /a HTTP/1.1\r\nhost: example.com\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(bufio.NewReader(c))
	if len(b) < 12 || string(b[:12]) != "HTTP/1.1 400" {
		t.Fatalf("conflicting content-length: %q, want a 400 then close", b)
	}
}

// TestHeaderMutationLevels: the four levels of header mutations (route
// configuration, virtual host, route, weighted cluster) apply as one list
// each way: on the request the most specific overwrite reaches the origin,
// on the response the route configuration's reaches the client.
func TestHeaderMutationLevels(t *testing.T) {
	up := startUpstream(t)
	set := func(name, value string) []*corev3.HeaderValueOption {
		return []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: name, Value: value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}}
	}
	rc := routeAll("unused")
	rc.RequestHeadersToAdd, rc.ResponseHeadersToAdd = set("x-up", "route_config"), set("x-down", "route_config")
	vh := rc.VirtualHosts[0]
	vh.RequestHeadersToAdd, vh.ResponseHeadersToAdd = set("x-up", "virtual_host"), set("x-down", "virtual_host")
	r := vh.Routes[0]
	r.RequestHeadersToAdd, r.ResponseHeadersToAdd = set("x-up", "route"), set("x-down", "route")
	r.GetRoute().ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
		Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "up", Weight: wrapperspb.UInt32(1),
			RequestHeadersToAdd: set("x-up", "weighted_cluster"), ResponseHeadersToAdd: set("x-down", "weighted_cluster")}}}}
	p := startProxy(t, newConfig(t, rc, []*cluster.Cluster{buildCluster(t, "up", up)}))
	status, hdr, body := dial(t, p.ln.Addr().String()).do("GET /m HTTP/1.1\r\nhost: example.com\r\nx-up: client\r\n\r\n")
	if status != 200 || body != "path=/m x-up=weighted_cluster" {
		t.Fatalf("%d %q: want the weighted cluster's x-up at the origin", status, body)
	}
	if got := hdr["x-down"]; got != "route_config" {
		t.Fatalf("x-down %q at the client, want the route configuration's", got)
	}
}
