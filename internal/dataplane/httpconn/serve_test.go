package httpconn_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/omnirelay/omnirelay/internal/dataplane/cluster"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/http1"
	"github.com/omnirelay/omnirelay/internal/dataplane/httpconn"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/dataplane/router"
	"github.com/omnirelay/omnirelay/internal/dataplane/stats"
)

// upstreamServer is a minimal HTTP/1.1 origin on 127.0.0.1: it answers every
// request with 200 and a body naming the request path, so that the proxy's
// own cost dominates what a benchmark measures.
type upstreamServer struct {
	ln net.Listener
	wg sync.WaitGroup
}

func startUpstream(tb testing.TB) *upstreamServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	u := &upstreamServer{ln: ln}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				u.serve(c)
			}()
		}
	}()
	tb.Cleanup(func() { _ = ln.Close(); u.wg.Wait() })
	return u
}

func (u *upstreamServer) serve(c net.Conn) {
	defer c.Close()
	r := http1.NewReader(c, 16<<10)
	var req message.Request
	var buf [4096]byte
	var out, msg []byte
	for {
		req.Reset()
		f, err := r.ReadRequest(&req, http1.DefaultLimits())
		if err != nil {
			return
		}
		body := r.BodyReader(f, &req.Trailer)
		for {
			if _, err := body.Read(buf[:]); err != nil {
				break
			}
		}
		msg = append(append(msg[:0], "path="...), req.Path...)
		if v, ok := req.Header.Get("x-up"); ok {
			msg = append(append(msg, " x-up="...), v...)
		}
		out = append(out[:0], "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: "...)
		out = strconv.AppendInt(out, int64(len(msg)), 10)
		out = append(out, "\r\n\r\n"...)
		out = append(out, msg...)
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

func (u *upstreamServer) addr() *corev3.Address {
	ta := u.ln.Addr().(*net.TCPAddr)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ta.Port)}}}}
}

// buildCluster compiles a static cluster named name with the upstreams as
// its endpoints.
func buildCluster(tb testing.TB, name string, ups ...*upstreamServer) *cluster.Cluster {
	tb.Helper()
	var lbes []*endpointv3.LbEndpoint
	for _, u := range ups {
		lbes = append(lbes, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: u.addr()}}})
	}
	c := &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbes}}}}
	cl, err := cluster.Build(c, nil, nil, &cluster.Env{Stats: stats.New(), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(cl.Close)
	return cl
}

// routeAll is a route configuration sending every request to cluster.
func routeAll(cluster string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{{
		Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{{
			Name:  "all",
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
		}},
	}}}
}

// newConfig compiles one listener version: rc routed over the clusters,
// filters before the router.
func newConfig(tb testing.TB, rc *routev3.RouteConfiguration, cls []*cluster.Cluster, filters ...filter.Filter) *httpconn.Config {
	tb.Helper()
	table, err := router.Compile(rc, nil)
	if err != nil {
		tb.Fatal(err)
	}
	rtr := &router.Router{Clusters: cluster.NewSet(cls), Table: table}
	return (&httpconn.Config{Chain: filter.NewChain(rtr, filters...)}).Init()
}

// proxy serves an httpconn.Server on 127.0.0.1 (tests publish new versions
// to p.srv).
type proxy struct {
	ln  net.Listener
	srv *httpconn.Server
	wg  sync.WaitGroup
}

func startProxy(tb testing.TB, cfg *httpconn.Config) *proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &proxy{ln: ln, srv: httpconn.NewServer(cfg)}
	ctx, cancel := context.WithCancel(context.Background())
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.srv.ServeConn(ctx, c, filter.DownstreamOf("test", c))
			}()
		}
	}()
	tb.Cleanup(func() {
		_ = ln.Close()
		p.srv.Drain()
		cancel()
		p.wg.Wait()
	})
	return p
}

// client is a raw HTTP/1.1 keep-alive client: it writes request bytes as
// given and reads one response each, so tests control the wire exactly.
type client struct {
	tb testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dial(tb testing.TB, addr string) *client {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return &client{tb: tb, c: c, br: bufio.NewReader(c)}
}

// do sends raw and returns the status, the headers (lower-cased names) and
// the body of the response, which must carry a content-length.
func (cl *client) do(raw string) (int, map[string]string, string) {
	cl.tb.Helper()
	if _, err := io.WriteString(cl.c, raw); err != nil {
		cl.tb.Fatal(err)
	}
	return cl.read()
}

// read reads one response (see do).
func (cl *client) read() (int, map[string]string, string) {
	cl.tb.Helper()
	line, err := cl.br.ReadString('\n')
	if err != nil {
		cl.tb.Fatalf("status line: %v", err)
	}
	parts := strings.SplitN(line, " ", 3)
	if len(parts) < 2 {
		cl.tb.Fatalf("status line %q", line)
	}
	status, _ := strconv.Atoi(parts[1])
	hdr := map[string]string{}
	for {
		l, err := cl.br.ReadString('\n')
		if err != nil {
			cl.tb.Fatalf("header: %v", err)
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		k, v, _ := strings.Cut(l, ":")
		hdr[strings.ToLower(k)] = strings.TrimSpace(v)
	}
	n, err := strconv.Atoi(hdr["content-length"])
	if err != nil {
		cl.tb.Fatalf("content-length %q: %v", hdr["content-length"], err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(cl.br, body); err != nil {
		cl.tb.Fatalf("body: %v", err)
	}
	return status, hdr, string(body)
}

// BenchmarkServeH1 is the proxy's per-request cost for a keep-alive
// HTTP/1.1 request through the whole path: codec, chain, route match,
// router, cluster pick and a pooled upstream connection on loopback.
func BenchmarkServeH1(b *testing.B) {
	up := startUpstream(b)
	cfg := newConfig(b, routeAll("up"), []*cluster.Cluster{buildCluster(b, "up", up)})
	p := startProxy(b, cfg)
	cl := dial(b, p.ln.Addr().String())
	const req = "GET /bench/x HTTP/1.1\r\nhost: bench.example.com\r\nuser-agent: bench\r\naccept: */*\r\n\r\n"
	if status, _, body := cl.do(req); status != 200 || body != "path=/bench/x" {
		b.Fatalf("%d %q", status, body)
	}
	// The loop reads with the zero-allocation http1 reader so that
	// allocs/op counts the proxy's allocations (and the origin's), not the
	// client's.
	rd := http1.NewReader(cl.br, 16<<10)
	var resp message.Response
	var buf [512]byte
	get := []byte("GET")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := io.WriteString(cl.c, req); err != nil {
			b.Fatal(err)
		}
		resp.Reset()
		f, err := rd.ReadResponse(&resp, get, http1.Limits{})
		if err != nil || resp.Status != 200 {
			b.Fatalf("%d %v", resp.Status, err)
		}
		body := rd.BodyReader(f, &resp.Trailer)
		for {
			if _, err := body.Read(buf[:]); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
	}
}
