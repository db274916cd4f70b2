package serve

import (
	"context"
	"encoding/json"
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

	"github.com/omnirelay/omnirelay/internal/controlplane/identity"
	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

// TestXDSStreamsEndOnRecordChange: a node record changed in the store
// directly, as another replica sharing it (etcd) would change it, ends the
// node's open xDS stream when the record is revoked, deleted or bound to
// another SPIFFE ID, and leaves it open when the record is only rewritten
// (an SVID renewal). Both transports.
func TestXDSStreamsEndOnRecordChange(t *testing.T) {
	for _, transport := range []string{"lean", "grpc"} {
		t.Run(transport, func(t *testing.T) {
			p, err := Start(Options{XDSAddress: "127.0.0.1:0", APIAddress: "127.0.0.1:0", IdentityAddress: "127.0.0.1:0",
				DataDir: t.TempDir(), Log: slog.New(slog.DiscardHandler), XDSTLS: true, XDSClientAuth: ClientAuthRequire, XDSTransport: transport})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = p.Shutdown(ctx)
			})
			doc := "listeners:\n  - { name: web, address: 127.0.0.1:9, virtual_hosts: [{ name: a, domains: [\"*\"], routes: [{ match: { path_prefix: / }, cluster: c }] }] }\n" +
				"clusters:\n  - { name: c, endpoints: [127.0.0.1:9] }\n"
			if _, err := p.MeshKit.Apply(context.Background(), "mesh.yaml", []byte(doc)); err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				name   string
				change func(n *identity.Node) (deleteIt bool)
				want   string // in the status; "" = the stream stays open
			}{
				{"revoked", func(n *identity.Node) bool { n.Revoked, n.RevokedAt = true, time.Now(); return false }, "is revoked"},
				{"deleted", func(*identity.Node) bool { return true }, "record was deleted"},
				{"rebound", func(n *identity.Node) bool { n.SPIFFEID = "spiffe://omnirelay.local/ns/other/sa/x"; return false }, "now bound to spiffe://omnirelay.local/ns/other/sa/x"},
				{"renewed", func(n *identity.Node) bool { n.LastIssuedAt = time.Now(); return false }, ""},
			} {
				t.Run(tc.name, func(t *testing.T) {
					nodeID := "web-" + tc.name
					events := openBoundStream(t, p, nodeID)
					changeRecord(t, p, nodeID, tc.change)
					if tc.want == "" {
						// A revocation written after the renewal is seen after it:
						// once its stream ends, the renewal has been handled.
						sentinel := openBoundStream(t, p, nodeID+"-sentinel")
						changeRecord(t, p, nodeID+"-sentinel", func(n *identity.Node) bool { n.Revoked = true; return false })
						if err := nextEnd(t, sentinel); status.Code(err) != codes.PermissionDenied {
							t.Fatalf("sentinel: %v", err)
						}
						select {
						case err := <-events:
							t.Fatalf("renewed node's stream: %v; want it open", err)
						default:
						}
						return
					}
					err := nextEnd(t, events)
					if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `"`+nodeID+`"`) || !strings.Contains(err.Error(), tc.want) {
						t.Fatalf("stream ended with %v; want PermissionDenied naming %q and %q", err, nodeID, tc.want)
					}
				})
			}
		})
	}
}

// openBoundStream enrols nodeID, gets its SVID, opens an ADS stream with it
// and waits for the first response; the channel then yields the stream's end.
func openBoundStream(t *testing.T, p *Process, nodeID string) <-chan error {
	t.Helper()
	id := "spiffe://omnirelay.local/ns/shop/sa/" + nodeID
	tok, err := adminClient(t, p).CreateJoinToken(context.Background(), &meshkitv1.CreateJoinTokenRequest{NodeId: nodeID, SpiffeId: id})
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := x509bundle.Parse(spiffeid.RequireTrustDomainFromString("omnirelay.local"), tok.GetTrustBundlePem())
	if err != nil {
		t.Fatal(err)
	}
	svid := sign(t, p, bundle, nil, &meshkitv1.SignRequest{JoinToken: tok.GetToken()}, id)
	cfg := tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromSegments(bundle.TrustDomain(), "meshkit")))
	cc, err := grpc.NewClient(p.XDSAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: nodeID}, TypeUrl: resourcev3.ListenerType}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("%s: first response: %v", nodeID, err)
	}
	end, done := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := st.Recv(); err != nil {
				end <- err
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done; _ = cc.Close() })
	return end
}

// changeRecord rewrites (or deletes) the node's record in the store itself.
func changeRecord(t *testing.T, p *Process, nodeID string, change func(*identity.Node) bool) {
	t.Helper()
	ctx := context.Background()
	key := "/identity/nodes/" + nodeID
	kv, err := p.Store.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	var n identity.Node
	if err := json.Unmarshal(kv.Value, &n); err != nil {
		t.Fatal(err)
	}
	if change(&n) {
		err = p.Store.Delete(ctx, key, kv.Revision)
	} else {
		data, _ := json.Marshal(n)
		_, err = p.Store.Put(ctx, key, data, kv.Revision)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func nextEnd(t *testing.T, end <-chan error) error {
	t.Helper()
	select {
	case err := <-end:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("stream still open 5s after the change")
	}
	return nil
}
