package serve

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

// TestXDSTLSOptions: Start refuses the combinations that would leave xDS
// open or cannot work, and accepts the rest.
func TestXDSTLSOptions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opt     Options
		wantErr string // "" = starts
	}{
		{"plaintext on loopback", Options{XDSAddress: "127.0.0.1:0"}, ""},
		{"plaintext beyond loopback", Options{XDSAddress: "0.0.0.0:0"}, "--xds-tls (or --xds-insecure"},
		{"tls without the identity CA", Options{XDSAddress: "127.0.0.1:0", XDSTLS: true}, "needs the identity CA"},
		{"client auth without tls", Options{XDSAddress: "127.0.0.1:0", XDSClientAuth: ClientAuthRequire}, "needs --xds-tls"},
		{"unknown client auth", Options{XDSAddress: "127.0.0.1:0", XDSTLS: true, IdentityAddress: "127.0.0.1:0", XDSClientAuth: "maybe"}, "want none, optional or require"},
		{"tls on the grpc transport", Options{XDSAddress: "127.0.0.1:0", XDSTLS: true, IdentityAddress: "127.0.0.1:0", XDSTransport: "grpc"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opt.APIAddress, tc.opt.DataDir, tc.opt.Log = "127.0.0.1:0", t.TempDir(), slog.New(slog.DiscardHandler)
			p, err := Start(tc.opt)
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = p.Shutdown(ctx)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Start: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Start: %v; want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestXDSExposure: the rule that keeps a plaintext xDS port on loopback,
// checked without binding beyond it.
func TestXDSExposure(t *testing.T) {
	for _, tc := range []struct {
		name            string
		addr            string
		tlsOn, insecure bool
		ok              bool
	}{
		{"loopback", "127.0.0.1:15010", false, false, true},
		{"localhost", "localhost:15010", false, false, true},
		{"ipv6 loopback", "[::1]:15010", false, false, true},
		{"any address", "0.0.0.0:15010", false, false, false},
		{"host name", "meshkit.internal:15010", false, false, false},
		{"any address, tls", "0.0.0.0:15010", true, false, true},
		{"any address, insecure", "0.0.0.0:15010", false, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkXDSExposure(tc.addr, tc.tlsOn, tc.insecure); (err == nil) != tc.ok {
				t.Fatalf("checkXDSExposure(%s, tls=%v, insecure=%v) = %v", tc.addr, tc.tlsOn, tc.insecure, err)
			}
		})
	}
}

// TestXDSNodeBinding: under client auth "require", a stream presenting the
// SVID of its own node opens; the same SVID after the node is revoked, or
// claiming another node id, is refused with PermissionDenied.
func TestXDSNodeBinding(t *testing.T) {
	p, err := Start(Options{XDSAddress: "127.0.0.1:0", APIAddress: "127.0.0.1:0", IdentityAddress: "127.0.0.1:0",
		DataDir: t.TempDir(), Log: slog.New(slog.DiscardHandler), XDSTLS: true, XDSClientAuth: ClientAuthRequire})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	}()
	doc := "listeners:\n  - { name: web, address: 127.0.0.1:9, virtual_hosts: [{ name: a, domains: [\"*\"], routes: [{ match: { path_prefix: / }, cluster: c }] }] }\n" +
		"clusters:\n  - { name: c, endpoints: [127.0.0.1:9] }\n"
	if _, err := p.MeshKit.Apply(context.Background(), "mesh.yaml", []byte(doc)); err != nil {
		t.Fatal(err)
	}
	const id = "spiffe://omnirelay.local/ns/shop/sa/web"
	admin := adminClient(t, p)
	tok, err := admin.CreateJoinToken(context.Background(), &meshkitv1.CreateJoinTokenRequest{NodeId: "web-1", SpiffeId: id})
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := x509bundle.Parse(spiffeid.RequireTrustDomainFromString("omnirelay.local"), tok.GetTrustBundlePem())
	if err != nil {
		t.Fatal(err)
	}
	svid := sign(t, p, bundle, nil, &meshkitv1.SignRequest{JoinToken: tok.GetToken()}, id)

	// open sends the first request of an ADS stream and returns the
	// stream's first answer: a response (nil error) or its end.
	open := func(nodeID string) error {
		t.Helper()
		server := spiffeid.RequireFromSegments(bundle.TrustDomain(), "meshkit")
		cfg := tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(server))
		cc, err := grpc.NewClient(p.XDSAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
		if err != nil {
			return err
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: nodeID}, TypeUrl: resourcev3.ListenerType}); err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	if err := open("web-1"); err != nil {
		t.Fatalf("own node: %v", err)
	}
	err = open("web-2")
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `"web-2"`) || !strings.Contains(err.Error(), `"web-1"`) {
		t.Fatalf("another node id: %v; want PermissionDenied naming web-2 and web-1", err)
	}
	if _, err := admin.RevokeNode(context.Background(), &meshkitv1.RevokeNodeRequest{NodeId: "web-1"}); err != nil {
		t.Fatal(err)
	}
	if err := open("web-1"); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("revoked node: %v; want PermissionDenied, revoked", err)
	}
}
