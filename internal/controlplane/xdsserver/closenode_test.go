package xdsserver

import (
	"context"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// endsWith opens an ADS stream (SotW or delta) for nodeID subscribed to the
// listener "l", and returns a channel that yields nil for each response and
// then the stream's final error.
func endsWith(t *testing.T, cc *grpc.ClientConn, nodeID string, delta bool) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan error, 16)
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(cc)
	var recv func() error
	if delta {
		st, err := ads.DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node(nodeID), TypeUrl: resourcev3.ListenerType}); err != nil {
			t.Fatal(err)
		}
		recv = func() error {
			m, err := st.Recv()
			if err == nil {
				_ = st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResponseNonce: m.GetNonce()})
			}
			return err
		}
	} else {
		st, err := ads.StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node(nodeID), TypeUrl: resourcev3.ListenerType}); err != nil {
			t.Fatal(err)
		}
		recv = func() error {
			m, err := st.Recv()
			if err == nil {
				_ = st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, VersionInfo: m.GetVersionInfo(), ResponseNonce: m.GetNonce()})
			}
			return err
		}
	}
	go func() {
		defer close(done)
		for {
			err := recv()
			out <- err
			if err != nil {
				return
			}
		}
	}()
	return out
}

func wait(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(testTimeout):
		t.Fatalf("%s: nothing within %v", what, testTimeout)
	}
	return nil
}

// TestCloseNode: CloseNode ends every stream of one node (SotW and delta)
// with its status and leaves other nodes' streams served; a stream that
// CloseNode reaches while it is still being authorized (the revocation
// landed after Authorize read the node's record) ends as soon as it is set
// up; without Authorize no stream is listed and CloseNode does nothing.
func TestCloseNode(t *testing.T) {
	revoked := status.Error(codes.PermissionDenied, `xds: node "a" is revoked`)
	for _, tc := range []struct {
		name string
		// authorize is Options.Authorize given the server (nil: none).
		authorize func(s *Server) func(*corev3.Node, Peer) (bool, error)
		// closeFirst: CloseNode runs inside Authorize, before the stream is set up.
		closeFirst bool
		want       int // streams CloseNode reaches
	}{
		{name: "open streams", authorize: func(*Server) func(*corev3.Node, Peer) (bool, error) {
			return func(*corev3.Node, Peer) (bool, error) { return true, nil }
		}, want: 2},
		{name: "closed while opening", closeFirst: true, authorize: func(s *Server) func(*corev3.Node, Peer) (bool, error) {
			return func(n *corev3.Node, _ Peer) (bool, error) {
				if n.GetId() == "a" {
					s.CloseNode("a", revoked)
				}
				return true, nil
			}
		}},
		{name: "no Authorize"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, Options{})
			if tc.authorize != nil {
				ts.server.SetAuthorize(tc.authorize(ts.server))
			}
			for _, g := range []string{"a", "b"} {
				ts.cache.Set(g, snapshot("v1", map[string][]*Resource{resourcev3.ListenerType: {listener(t, "l")}}))
			}
			cc := dial(t, ts.addr)
			a1, a2, b := endsWith(t, cc, "a", false), endsWith(t, cc, "a", true), endsWith(t, cc, "b", false)
			if tc.closeFirst {
				for _, ch := range []<-chan error{a1, a2} {
					if err := wait(t, ch, "stream closed while opening"); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "revoked") {
						t.Fatalf("stream closed while opening ended with %v; want %v", err, revoked)
					}
				}
				if err := wait(t, b, "other node"); err != nil {
					t.Fatalf("other node: %v", err)
				}
				return
			}
			for _, ch := range []<-chan error{a1, a2, b} {
				if err := wait(t, ch, "first response"); err != nil {
					t.Fatalf("first response: %v", err)
				}
			}
			if n := ts.server.CloseNode("a", revoked); n != tc.want {
				t.Fatalf("CloseNode reached %d streams; want %d", n, tc.want)
			}
			if tc.want > 0 {
				for _, ch := range []<-chan error{a1, a2} {
					if err := wait(t, ch, "closed stream"); status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != `xds: node "a" is revoked` {
						t.Fatalf("closed stream ended with %v; want %v", err, revoked)
					}
				}
				if n := ts.server.CloseNode("a", revoked); n != 0 {
					t.Fatalf("CloseNode again reached %d streams; want 0 (they are gone)", n)
				}
			}
			ts.cache.Set("b", snapshot("v2", map[string][]*Resource{resourcev3.ListenerType: {listener(t, "l"), listener(t, "m")}}))
			if err := wait(t, b, "other node's update"); err != nil {
				t.Fatalf("other node's update: %v", err)
			}
			if tc.want == 0 {
				ts.cache.Set("a", snapshot("v2", map[string][]*Resource{resourcev3.ListenerType: {listener(t, "l"), listener(t, "m")}}))
				for _, ch := range []<-chan error{a1, a2} {
					if err := wait(t, ch, "update without Authorize"); err != nil {
						t.Fatalf("update without Authorize: %v", err)
					}
				}
			}
		})
	}
}
