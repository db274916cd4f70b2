package xdsclient

import (
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// TestInitialFetchTimeout: a control plane that never sends a cluster's
// load assignment does not hold the whole config back forever: after the
// initial fetch timeout the config applies with that cluster empty (as
// Envoy's initial_fetch_timeout), the updates are ACKed, and the assignment
// applies when it finally comes.
func TestInitialFetchTimeout(t *testing.T) {
	for _, sotw := range []bool{true, false} {
		t.Run(map[bool]string{true: "sotw", false: "delta"}[sotw], func(t *testing.T) {
			f, addr := startFake(t)
			rec := newRecorder()
			const timeout = 300 * time.Millisecond
			runClient(t, Options{Address: addr, NodeID: "n1", SotW: sotw, Apply: rec.apply, InitialFetchTimeout: timeout})
			rs := byType(t, translateYAML(t, staticYAML, true), nil)
			send := func(typeURL, nonce string, rs []*discoveryv3.Resource) {
				if sotw {
					f.sotw <- sotwResponse(t, typeURL, "v1", nonce, rs, false)
				} else {
					f.delta <- &discoveryv3.DeltaDiscoveryResponse{TypeUrl: typeURL, SystemVersionInfo: "v1", Nonce: nonce, Resources: rs}
				}
			}
			start := time.Now()
			send(TypeCluster, "c1", rs[TypeCluster])
			send(TypeListener, "l1", rs[TypeListener])
			send(TypeRoute, "r1", rs[TypeRoute])
			select {
			case s := <-rec.applied:
				if waited := time.Since(start); waited < timeout {
					t.Fatalf("applied after %v, before the %v timeout, without the load assignment", waited, timeout)
				}
				if len(s.Endpoints) != 1 || len(s.Endpoints[0].GetEndpoints()) != 0 || s.Endpoints[0].GetClusterName() != "a" {
					t.Fatalf("want an empty stand-in assignment for \"a\", got %v", s.Endpoints)
				}
				if len(s.Routes) != 1 {
					t.Fatalf("applied %d routes", len(s.Routes))
				}
			case <-time.After(10 * time.Second):
				t.Fatal("never applied without the missing load assignment")
			}
			for range 3 {
				if a := nextAnswer(t, f); a.detail != "" {
					t.Fatalf("NACK %+v", a)
				}
			}
			send(TypeEndpoint, "e1", rs[TypeEndpoint])
			select {
			case s := <-rec.applied:
				if len(s.Endpoints) != 1 || len(s.Endpoints[0].GetEndpoints()) == 0 {
					t.Fatalf("the late assignment did not apply: %v", s.Endpoints)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the late assignment never applied")
			}
		})
	}
}
