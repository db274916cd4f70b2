package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/omnirelay/omnirelay/internal/controlplane/serve"
	dpidentity "github.com/omnirelay/omnirelay/internal/dataplane/identity"
	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

// revokeClient is a real xDS client holding an SVID from MeshKit's identity
// port (the identity agent a proxy runs), connected over mTLS.
type revokeClient struct {
	node string
	cc   *grpc.ClientConn
}

func newRevokeClient(t *testing.T, m *tlsMesh, node string) *revokeClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	agent, err := dpidentity.NewAgent(dpidentity.Config{Address: m.mk.IdentityAddr().String(), NodeID: node,
		JoinToken: m.enrol(t, node), CAFile: m.caFile, MinBackoff: 50 * time.Millisecond, Log: testutil.Logger(t).With("agent", node)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = agent.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-agent.Ready():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no SVID from the identity port", node)
	}
	pem, err := os.ReadFile(m.caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, GetClientCertificate: agent.GetClientCertificate}
	cc, err := grpc.NewClient(m.mk.XDSAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return &revokeClient{node: node, cc: cc}
}

// xdsEvent is what one stream's reader saw: after a response, the number
// of clusters the client holds; or the stream's end.
type xdsEvent struct {
	clusters int
	err      error
}

// stream opens an ADS stream (SotW, or delta) subscribed to every cluster,
// ACKs each response, and reports responses and the end on the channel.
func (c *revokeClient) stream(t *testing.T, delta bool) <-chan xdsEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan xdsEvent, 16)
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(c.cc)
	node := &corev3.Node{Id: c.node, Cluster: "e2e"}
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	if delta {
		st, err := ads.DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType}); err != nil {
			t.Fatal(err)
		}
		go func() {
			defer close(done)
			held := map[string]bool{}
			for {
				resp, err := st.Recv()
				if err != nil {
					out <- xdsEvent{err: err}
					return
				}
				for _, r := range resp.GetResources() {
					held[r.GetName()] = true
				}
				for _, n := range resp.GetRemovedResources() {
					delete(held, n)
				}
				_ = st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: resp.GetNonce()})
				out <- xdsEvent{clusters: len(held)}
			}
		}()
		return out
	}
	st, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(done)
		for {
			resp, err := st.Recv()
			if err != nil {
				out <- xdsEvent{err: err}
				return
			}
			_ = st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
			out <- xdsEvent{clusters: len(resp.GetResources())}
		}
	}()
	return out
}

// next waits for a stream's next event.
func next(t *testing.T, ch <-chan xdsEvent, what string) xdsEvent {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: nothing within 10s", what)
	}
	return xdsEvent{}
}

// holds waits until a stream's client holds n clusters, failing on the
// stream's end.
func holds(t *testing.T, ch <-chan xdsEvent, n int, what string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	got := -1
	for got != n {
		select {
		case ev := <-ch:
			if ev.err != nil {
				t.Fatalf("%s: stream ended: %v", what, ev.err)
			}
			got = ev.clusters
		case <-deadline:
			t.Fatalf("%s: holds %d clusters after 10s; want %d", what, got, n)
		}
	}
}

// applyClusters applies the test config with n extra clusters: a new
// version for every subscribed stream.
func applyClusters(t *testing.T, m *tlsMesh, n int) {
	t.Helper()
	doc := fmt.Sprintf(`listeners:
  - name: web
    address: %s
    virtual_hosts: [{ name: a, domains: ["*"], routes: [{ match: { path_prefix: / }, cluster: c }] }]
clusters:
  - { name: c, endpoints: [%s] }
`, m.web, m.backend)
	for i := range n {
		doc += fmt.Sprintf("  - { name: extra-%d, endpoints: [%s] }\n", i, m.backend)
	}
	if _, err := m.mk.MeshKit.Apply(context.Background(), "revoke.yaml", []byte(doc)); err != nil {
		t.Fatal(err)
	}
}

// TestMeshXDSRevokeClosesStreams: over both transports under client auth
// require, a node revoked through the admin API (omnictl node revoke's
// path) loses its open SotW and delta streams within two seconds with
// PermissionDenied naming the node and "revoked", gets no further update
// and is refused on reconnect, while another node's stream keeps receiving
// updates.
func TestMeshXDSRevokeClosesStreams(t *testing.T) {
	for _, transport := range []string{"lean", "grpc"} {
		t.Run(transport, func(t *testing.T) {
			m := startTLSMeshKit(t, transport, serve.ClientAuthRequire, 0)
			victim, other := newRevokeClient(t, m, "edge-revoked"), newRevokeClient(t, m, "edge-kept")
			sotw, delta, kept := victim.stream(t, false), victim.stream(t, true), other.stream(t, false)
			streams := []struct {
				name string
				ch   <-chan xdsEvent
			}{{"revoked node's sotw", sotw}, {"revoked node's delta", delta}, {"other node", kept}}
			for _, s := range streams {
				holds(t, s.ch, 1, s.name+": first response")
			}
			applyClusters(t, m, 2)
			for _, s := range streams {
				holds(t, s.ch, 3, s.name+": update before the revocation")
			}

			admin := meshkitv1.NewIdentityAdminClient(apiConn(t, m.mk.APIAddr().String()))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := admin.RevokeNode(ctx, &meshkitv1.RevokeNodeRequest{NodeId: victim.node}); err != nil {
				t.Fatal(err)
			}
			revoked := time.Now()
			for _, s := range []struct {
				name string
				ch   <-chan xdsEvent
			}{{"sotw", sotw}, {"delta", delta}} {
				ev := next(t, s.ch, s.name+" of the revoked node")
				if ev.err == nil {
					t.Fatalf("%s: revoked node got a response (%d clusters); want its stream ended", s.name, ev.clusters)
				}
				if took := time.Since(revoked); took > 2*time.Second {
					t.Fatalf("%s: stream ended %v after the revocation; want within 2s", s.name, took)
				}
				if status.Code(ev.err) != codes.PermissionDenied || !strings.Contains(ev.err.Error(), `"edge-revoked"`) || !strings.Contains(ev.err.Error(), "revoked") {
					t.Fatalf("%s: stream ended with %v; want PermissionDenied naming the node, revoked", s.name, ev.err)
				}
			}

			applyClusters(t, m, 4)
			holds(t, kept, 5, "other node after the revocation")
			select {
			case ev := <-sotw:
				t.Fatalf("revoked node's stream saw more after its end: %+v", ev)
			case ev := <-delta:
				t.Fatalf("revoked node's delta stream saw more after its end: %+v", ev)
			default:
			}

			again := next(t, victim.stream(t, false), "reconnect of the revoked node")
			if status.Code(again.err) != codes.PermissionDenied || !strings.Contains(again.err.Error(), "revoked") {
				t.Fatalf("reconnect: %+v; want PermissionDenied, revoked", again)
			}
		})
	}
}
