package xdsclient

import (
	"fmt"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/omnirelay/omnirelay/internal/shared/resources"
)

const blameYAML = `
listeners:
  - name: web
    address: 127.0.0.1:1
    protocol: http
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { path_prefix: / }
            cluster: CLUSTER
clusters:
  - { name: a, endpoints: [127.0.0.1:2] }
  - { name: b, endpoints: [127.0.0.1:3] }
`

// TestBlame follows one bad cluster through a control plane that, like
// MeshKit, never re-sends what was NACKed: the bad CDS update is NACKed,
// the route that needs the new cluster is NACKed too (it cannot run
// without it), an EDS update applies on its own, and when the cluster is
// fixed the route that was kept (never re-sent) applies with it.
func TestBlame(t *testing.T) {
	f, addr := startFake(t)
	rec := newRecorder()
	rec.check = func(s *resources.Snapshot) error {
		if err := s.Validate(); err != nil { // as the runtime does first
			return err
		}
		for _, c := range s.Clusters {
			if c.GetConnectTimeout().AsDuration() == 7*time.Second {
				return fmt.Errorf("cluster %q: bad connect timeout", c.GetName())
			}
		}
		return nil
	}
	runClient(t, Options{Address: addr, NodeID: "n1", Apply: rec.apply})
	toA := byType(t, translateYAML(t, strings.ReplaceAll(blameYAML, "CLUSTER", "a"), true), nil)
	toB := byType(t, translateYAML(t, strings.ReplaceAll(blameYAML, "CLUSTER", "b"), true), nil)
	n := 0
	send := func(typeURL string, rs []*discoveryv3.Resource) string {
		n++
		nonce := fmt.Sprint("n", n)
		f.delta <- &discoveryv3.DeltaDiscoveryResponse{TypeUrl: typeURL, SystemVersionInfo: nonce, Nonce: nonce, Resources: rs}
		return nonce
	}
	only := func(rs []*discoveryv3.Resource, name string) []*discoveryv3.Resource {
		for _, r := range rs {
			if r.GetName() == name {
				return []*discoveryv3.Resource{r}
			}
		}
		t.Fatalf("no resource %q", name)
		return nil
	}
	withTimeout := func(r *discoveryv3.Resource, d time.Duration) *discoveryv3.Resource {
		var c clusterv3.Cluster
		if err := r.GetResource().UnmarshalTo(&c); err != nil {
			t.Fatal(err)
		}
		c.ConnectTimeout = durationpb.New(d)
		body, err := resources.NewAny(&c)
		if err != nil {
			t.Fatal(err)
		}
		return &discoveryv3.Resource{Name: r.GetName(), Version: d.String(), Resource: body}
	}
	expect := func(nonce string, nack bool) ackNack {
		t.Helper()
		a := nextAnswer(t, f)
		if a.nonce != nonce || (a.detail != "") != nack {
			t.Fatalf("answer %+v, want nonce %s nack=%v", a, nonce, nack)
		}
		return a
	}
	lastRoute := func() string {
		t.Helper()
		var s *resources.Snapshot
		for {
			select {
			case s = <-rec.applied:
				continue
			default:
			}
			break
		}
		if s == nil {
			return ""
		}
		return s.Routes[0].GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster()
	}

	// Running: only cluster a, route to a.
	clusterA := only(toA[TypeCluster], "a")[0]
	send(TypeCluster, []*discoveryv3.Resource{clusterA})
	send(TypeListener, toA[TypeListener])
	send(TypeEndpoint, only(toA[TypeEndpoint], "a"))
	send(TypeRoute, toA[TypeRoute])
	for range 4 {
		if a := nextAnswer(t, f); a.detail != "" {
			t.Fatalf("NACK %+v", a)
		}
	}
	if r := lastRoute(); r != "a" {
		t.Fatalf("route to %q", r)
	}

	// Cluster b arrives broken, and a route to it: both wait for b's
	// endpoints (warming), so neither is answered yet.
	badB := withTimeout(only(toB[TypeCluster], "b")[0], 7*time.Second)
	cdsNonce := send(TypeCluster, []*discoveryv3.Resource{clusterA, badB})
	rdsNonce := send(TypeRoute, toB[TypeRoute])
	// The endpoints complete the set, which the runtime rejects for b: the
	// endpoints apply on their own (ACK), the cluster and the route that
	// needs it are NACKed, naming b.
	edsNonce := send(TypeEndpoint, toB[TypeEndpoint])
	got := map[string]ackNack{}
	for range 3 {
		a := nextAnswer(t, f)
		got[a.nonce] = a
	}
	if got[edsNonce].detail != "" || got[edsNonce].nonce == "" {
		t.Fatalf("EDS answer %+v, want ACK", got[edsNonce])
	}
	for _, n := range []string{cdsNonce, rdsNonce} {
		if !strings.Contains(got[n].detail, `cluster "b": bad connect timeout`) {
			t.Fatalf("answer to %s: %+v, want a NACK naming b", n, got[n])
		}
	}
	if r := lastRoute(); r != "a" {
		t.Fatalf("route to %q while b is rejected", r)
	}

	// The fixed cluster makes the kept route apply with it.
	expect(send(TypeCluster, []*discoveryv3.Resource{clusterA, withTimeout(only(toB[TypeCluster], "b")[0], 2*time.Second)}), false)
	if r := lastRoute(); r != "b" {
		t.Fatalf("after the fix the route goes to %q, want b", r)
	}
}
