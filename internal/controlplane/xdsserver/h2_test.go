package xdsserver

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"net"
	"slices"
	"testing"
	"time"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding/gzip"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/omnirelay/omnirelay/internal/shared/http2core"
)

// TestUnaryAndUnknownMethods: Fetch* and a method the server does not serve,
// from a grpc-go client, on either transport.
func TestUnaryAndUnknownMethods(t *testing.T) {
	srv := startServer(t, Options{})
	srv.cache.Set("n1", world(t, "1", 8000))
	cc := dial(t, srv.addr)
	cds := clusterservice.NewClusterDiscoveryServiceClient(cc)
	first, err := cds.FetchClusters(t.Context(), &discoveryv3.DiscoveryRequest{Node: node("n1")})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() (*discoveryv3.DiscoveryResponse, error)
		want []string
		code codes.Code
	}{
		{name: "fetch all", call: func() (*discoveryv3.DiscoveryResponse, error) {
			return cds.FetchClusters(t.Context(), &discoveryv3.DiscoveryRequest{Node: node("n1")})
		}, want: []string{"c1", "c2"}},
		{name: "fetch named", call: func() (*discoveryv3.DiscoveryResponse, error) {
			return cds.FetchClusters(t.Context(), &discoveryv3.DiscoveryRequest{Node: node("n1"), ResourceNames: []string{"c2"}})
		}, want: []string{"c2"}},
		{name: "fetch unchanged version", call: func() (*discoveryv3.DiscoveryResponse, error) {
			return cds.FetchClusters(t.Context(), &discoveryv3.DiscoveryRequest{Node: node("n1"), VersionInfo: first.VersionInfo})
		}, code: codes.Unavailable},
		{name: "fetch without node", call: func() (*discoveryv3.DiscoveryResponse, error) {
			return cds.FetchClusters(t.Context(), &discoveryv3.DiscoveryRequest{})
		}, code: codes.InvalidArgument},
		{name: "unknown service", call: func() (*discoveryv3.DiscoveryResponse, error) {
			_, err := healthpb.NewHealthClient(cc).Check(t.Context(), &healthpb.HealthCheckRequest{})
			return nil, err
		}, code: codes.Unimplemented},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.call()
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code %v (%v), want %v", got, err, tc.code)
			}
			if tc.code == codes.OK {
				if got := names(m.Resources); !slices.Equal(got, tc.want) {
					t.Fatalf("resources %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// TestLargeResponseCrossesWindows: a response far larger than grpc-go's
// initial windows arrives whole, so flow control works both ways (the client
// returns window as it reads, the server waits for it).
func TestLargeResponseCrossesWindows(t *testing.T) {
	srv := startServer(t, Options{})
	s := world(t, "1", 8000)
	var want []string
	for i := range 6 {
		r := cla(t, fmt.Sprintf("big%d", i), 1)
		r.Body.Value = append(r.Body.Value, make([]byte, 300<<10)...) // unknown-field padding keeps it valid
		s.Resources[resourcev3.EndpointType] = append(s.Resources[resourcev3.EndpointType], r)
		want = append(want, r.Name)
	}
	srv.cache.Set("n1", s)
	c := newDelta(t, dial(t, srv.addr))
	for round := range 3 {
		c.send(&discoveryv3.DeltaDiscoveryRequest{Node: node("n1"), TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: want})
		m := c.recv()
		if got := deltaNames(m.Resources); !slices.Equal(got, want) {
			t.Fatalf("round %d: %v", round, got)
		}
		c.ack(m)
		c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesUnsubscribe: want})
	}
}

// TestLeanCompressedRequestEndsOnlyItsStream: the lean transport does not
// decompress; a gzip request ends that call with Unimplemented and leaves the
// connection's other streams alone. (grpc-go, with gzip registered, would
// accept it: this is lean-only.)
func TestLeanCompressedRequestEndsOnlyItsStream(t *testing.T) {
	if !leanTransport {
		t.Skip("lean transport only")
	}
	srv := startServer(t, Options{})
	srv.cache.Set("n1", world(t, "1", 8000))
	cc := dial(t, srv.addr)
	good := newSotW(t, cc)
	good.send(&discoveryv3.DiscoveryRequest{Node: node("n1"), TypeUrl: resourcev3.ClusterType})
	good.ack(good.recv())

	_, err := clusterservice.NewClusterDiscoveryServiceClient(cc).FetchClusters(t.Context(),
		&discoveryv3.DiscoveryRequest{Node: node("n1")}, grpc.UseCompressor(gzip.Name))
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("compressed call: %v, want Unimplemented", err)
	}
	good.barrier("b1")
}

// TestLeanProtocolErrors sends raw HTTP/2 that breaks the protocol, each on
// its own connection; the server must answer with GOAWAY or RST_STREAM (or
// just close) and keep serving a well-behaved client.
func TestLeanProtocolErrors(t *testing.T) {
	if !leanTransport {
		t.Skip("lean transport only")
	}
	srv := startServer(t, Options{})
	srv.cache.Set("n1", world(t, "1", 8000))
	good := newDelta(t, dial(t, srv.addr))
	good.send(&discoveryv3.DeltaDiscoveryRequest{Node: node("n1"), TypeUrl: resourcev3.ClusterType})
	good.ack(good.recv())

	tests := []struct {
		name string
		in   []byte
	}{
		{name: "bad preface", in: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{name: "data before settings", in: append([]byte(http2.ClientPreface), rawFrame(http2.FrameData, 0, 1, []byte("x"))...)},
		{name: "data on idle stream", in: append(h2Seed(t, false)[:len(http2.ClientPreface)+9], rawFrame(http2.FrameData, 0, 7, []byte("xx"))...)},
		{name: "even stream id", in: append(h2Seed(t, false)[:len(http2.ClientPreface)+9], rawFrame(http2.FrameHeaders, http2.FlagHeadersEndHeaders, 2, []byte{0x82})...)},
		{name: "bad hpack", in: append(h2Seed(t, false)[:len(http2.ClientPreface)+9], rawFrame(http2.FrameHeaders, http2.FlagHeadersEndHeaders, 1, []byte{0xff, 0xff, 0xff})...)},
		{name: "message over the limit", in: append(h2Seed(t, false)[:len(http2.ClientPreface)+9+headersLen(t)], rawFrame(http2.FrameData, 0, 1, []byte{0, 0x7f, 0xff, 0xff, 0xff})...)},
		{name: "window overflow", in: append(h2Seed(t, false)[:len(http2.ClientPreface)+9], rawFrame(http2.FrameWindowUpdate, 0, 0, []byte{0x7f, 0xff, 0xff, 0xff})...)},
		{name: "garbage request", in: append(h2Seed(t, false)[:len(http2.ClientPreface)+9+headersLen(t)], rawFrame(http2.FrameData, http2.FlagDataEndStream, 1, []byte{0, 0, 0, 0, 3, 0xff, 0xff, 0xff})...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", srv.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if _, err := nc.Write(tc.in); err != nil {
				t.Fatal(err)
			}
			// The server answers and closes, or answers and waits: either way
			// reading must not hang past the deadline with the connection
			// silently stuck in a bad state.
			_ = nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			out, _ := io.ReadAll(nc)
			if tc.name != "bad preface" && !bytes.Contains(out, []byte{byte(http2.FrameSettings)}) {
				t.Fatalf("no SETTINGS from the server: %x", out)
			}
		})
	}
	good.barrier("b2")
}

// TestLeanSettingsAndWindowErrors: settings the RFC forbids and windows
// past 2^31-1 end the connection (GOAWAY) or the stream (RST_STREAM) with
// the code RFC 9113 names, as on the data plane's server.
func TestLeanSettingsAndWindowErrors(t *testing.T) {
	if !leanTransport {
		t.Skip("lean transport only")
	}
	srv := startServer(t, Options{})
	srv.cache.Set("n1", world(t, "1", 8000))
	seed := h2Seed(t, false)
	tests := []struct {
		name     string
		in       []byte
		goAway   bool // else RST_STREAM on stream 1
		wantCode http2.ErrCode
	}{
		{name: "max frame size below 16384", in: rawFrame(http2.FrameSettings, 0, 0, []byte{0, 5, 0, 0, 0, 100}),
			goAway: true, wantCode: http2.ErrCodeProtocol},
		{name: "enable push 2", in: rawFrame(http2.FrameSettings, 0, 0, []byte{0, 2, 0, 0, 0, 2}),
			goAway: true, wantCode: http2.ErrCodeProtocol},
		{name: "initial window takes an open stream past 2^31-1", in: rawFrame(http2.FrameSettings, 0, 0, []byte{0, 4, 0x7f, 0xff, 0xff, 0xff}),
			goAway: true, wantCode: http2.ErrCodeFlowControl},
		{name: "stream window update past 2^31-1", in: rawFrame(http2.FrameWindowUpdate, 0, 1, []byte{0x7f, 0xff, 0xff, 0xff}),
			wantCode: http2.ErrCodeFlowControl},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", srv.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if _, err := nc.Write(append(append([]byte{}, seed...), tc.in...)); err != nil {
				t.Fatal(err)
			}
			_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			fr := http2.NewFramer(nil, nc)
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					t.Fatalf("no %v before %v", tc.wantCode, err)
				}
				switch f := f.(type) {
				case *http2.GoAwayFrame:
					if !tc.goAway || f.ErrCode != tc.wantCode {
						t.Fatalf("GOAWAY %v, want goAway=%v code %v", f.ErrCode, tc.goAway, tc.wantCode)
					}
					return
				case *http2.RSTStreamFrame:
					if tc.goAway || f.StreamID != 1 || f.ErrCode != tc.wantCode {
						t.Fatalf("RST_STREAM %d %v, want goAway=%v code %v", f.StreamID, f.ErrCode, tc.goAway, tc.wantCode)
					}
					return
				}
			}
		})
	}
}

func rawFrame(t http2.FrameType, flags http2.Flags, id uint32, payload []byte) []byte {
	return append(http2core.AppendFrameHeader(nil, len(payload), t, flags, id), payload...)
}

func headersLen(t testing.TB) int {
	return 9 + len(adsHeaderBlock(t, discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResources_FullMethodName))
}

func adsHeaderBlock(t testing.TB, path string) []byte {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", path},
		{":authority", "x"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			t.Fatal(err)
		}
	}
	return hb.Bytes()
}

// h2Seed is a well-formed client session: preface, SETTINGS, HEADERS for a
// delta (or SotW) ADS stream, one request, a PING and a WINDOW_UPDATE.
func h2Seed(t testing.TB, sotw bool) []byte {
	path := discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResources_FullMethodName
	var req proto.Message = &discoveryv3.DeltaDiscoveryRequest{Node: node("n1"), TypeUrl: resourcev3.ClusterType}
	if sotw {
		path = discoveryv3.AggregatedDiscoveryService_StreamAggregatedResources_FullMethodName
		req = &discoveryv3.DiscoveryRequest{Node: node("n1"), TypeUrl: resourcev3.ClusterType}
	}
	body, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	msg := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(body)))
	msg = append(msg, body...)
	b := []byte(http2.ClientPreface)
	b = append(b, rawFrame(http2.FrameSettings, 0, 0, nil)...)
	b = append(b, rawFrame(http2.FrameHeaders, http2.FlagHeadersEndHeaders, 1, adsHeaderBlock(t, path))...)
	b = append(b, rawFrame(http2.FrameData, 0, 1, msg)...)
	b = append(b, rawFrame(http2.FramePing, 0, 0, make([]byte, 8))...)
	b = append(b, rawFrame(http2.FrameWindowUpdate, 0, 1, []byte{0, 1, 0, 0})...)
	return b
}

// FuzzLeanConn feeds arbitrary bytes, after a valid preface, to one lean
// connection: it must neither panic nor hang, and must release everything.
func FuzzLeanConn(f *testing.F) {
	pre := len(http2.ClientPreface)
	f.Add(h2Seed(f, false)[pre:])
	f.Add(h2Seed(f, true)[pre:])
	f.Fuzz(func(t *testing.T, in []byte) {
		cache := NewCache()
		cache.Set("n1", world(t, "1", 8000))
		s := New(Options{Cache: cache})
		cl, sv := net.Pipe()
		c := newH2Conn(s, sv)
		s.lmu.Lock()
		s.conns[c] = struct{}{}
		s.lwg.Add(1)
		s.lmu.Unlock()
		go c.serve()
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			_, _ = io.Copy(io.Discard, cl)
		}()
		_ = cl.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = cl.Write([]byte(http2.ClientPreface))
		_, _ = cl.Write(in)
		_ = cl.Close()
		done := make(chan struct{})
		go func() {
			s.Stop()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("connection did not shut down")
		}
		<-drained
	})
}

// TestLeanOverTLS: Serve on a tls.Listener (not a plain socket, so every
// write goes through the flusher goroutine) with a grpc-go client.
func TestLeanOverTLS(t *testing.T) {
	if !leanTransport {
		t.Skip("lean transport only")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "xds.test"},
		DNSNames: []string{"xds.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsLis := tls.NewListener(lis, &tls.Config{NextProtos: []string{"h2"},
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	cache := NewCache()
	cache.Set("n1", world(t, "1", 8000))
	srv := New(Options{Cache: cache})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(tlsLis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(
		credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "xds.test"})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	c := newDelta(t, cc)
	c.send(&discoveryv3.DeltaDiscoveryRequest{Node: node("n1"), TypeUrl: resourcev3.ClusterType})
	m := c.recv()
	if got := deltaNames(m.Resources); !slices.Equal(got, []string{"c1", "c2"}) {
		t.Fatalf("resources %v", got)
	}
	c.ack(m)
	cache.Set("n1", world(t, "2", 8001))
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{"c1"}})
	if got := deltaNames(c.recv().Resources); !slices.Equal(got, []string{"c1"}) {
		t.Fatalf("endpoints %v", got)
	}
}
