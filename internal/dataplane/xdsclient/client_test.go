package xdsclient

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
	"github.com/omnirelay/omnirelay/internal/shared/translate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeADS is a hand-written ADS server: the test decides every response
// and sees every request, which go-control-plane's server does not allow
// for signed or tampered resources.
type fakeADS struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	sotw  chan *discoveryv3.DiscoveryResponse
	delta chan *discoveryv3.DeltaDiscoveryResponse
	reqs  chan proto.Message
	// end ends the current stream (the server's side of a reconnect).
	end chan struct{}
}

func (f *fakeADS) StreamAggregatedResources(s discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	errc := make(chan error, 1)
	go func() {
		for {
			r, err := s.Recv()
			if err != nil {
				errc <- err
				return
			}
			f.reqs <- r
		}
	}()
	for {
		select {
		case m := <-f.sotw:
			if err := s.Send(m); err != nil {
				return err
			}
		case <-errc:
			return nil
		case <-f.end:
			return nil
		case <-s.Context().Done():
			return nil
		}
	}
}

func (f *fakeADS) DeltaAggregatedResources(s discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	errc := make(chan error, 1)
	go func() {
		for {
			r, err := s.Recv()
			if err != nil {
				errc <- err
				return
			}
			f.reqs <- r
		}
	}()
	for {
		select {
		case m := <-f.delta:
			if err := s.Send(m); err != nil {
				return err
			}
		case <-errc:
			return nil
		case <-f.end:
			return nil
		case <-s.Context().Done():
			return nil
		}
	}
}

func startFake(t *testing.T) (*fakeADS, string) {
	t.Helper()
	f := &fakeADS{sotw: make(chan *discoveryv3.DiscoveryResponse, 16),
		delta: make(chan *discoveryv3.DeltaDiscoveryResponse, 16), reqs: make(chan proto.Message, 256), end: make(chan struct{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, f)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return f, ln.Addr().String()
}

const staticYAML = `
listeners:
  - name: web
    address: 127.0.0.1:1
    protocol: http
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { path_prefix: / }
            cluster: a
clusters:
  - { name: a, endpoints: [127.0.0.1:2] }
`

func translateYAML(t testing.TB, y string, ads bool) *resources.Snapshot {
	t.Helper()
	c, err := config.Parse("test.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	s, err := translate.TranslateWith(c, translate.Options{ADS: ads})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signedResource is one resource as a signing control plane sends it.
type signedResource struct {
	typeURL string
	res     *discoveryv3.Resource
}

// byType returns the snapshot's resources of each type, signed by key
// (nil: unsigned), keyed by type URL.
func byType(t testing.TB, s *resources.Snapshot, key ed25519.PrivateKey) map[string][]*discoveryv3.Resource {
	t.Helper()
	out := map[string][]*discoveryv3.Resource{}
	add := func(typeURL, name string, m proto.Message) {
		body, err := resources.NewAny(m)
		if err != nil {
			t.Fatal(err)
		}
		r := &discoveryv3.Resource{Name: name, Version: "1", Resource: body}
		if key != nil {
			if r.Metadata, err = signing.SignResource(signing.NewSigner(key), name, body); err != nil {
				t.Fatal(err)
			}
		}
		out[typeURL] = append(out[typeURL], r)
	}
	for _, l := range s.Listeners {
		add(TypeListener, l.GetName(), l)
	}
	for _, c := range s.Clusters {
		add(TypeCluster, c.GetName(), c)
	}
	for _, r := range s.Routes {
		add(TypeRoute, r.GetName(), r)
	}
	for _, e := range s.Endpoints {
		add(TypeEndpoint, e.GetClusterName(), e)
	}
	return out
}

func sotwResponse(t *testing.T, typeURL, version, nonce string, rs []*discoveryv3.Resource, wrap bool) *discoveryv3.DiscoveryResponse {
	t.Helper()
	m := &discoveryv3.DiscoveryResponse{TypeUrl: typeURL, VersionInfo: version, Nonce: nonce}
	for _, r := range rs {
		a := r.GetResource()
		if wrap {
			var err error
			if a, err = signing.WrapResource(r); err != nil {
				t.Fatal(err)
			}
		}
		m.Resources = append(m.Resources, a)
	}
	return m
}

// recorder is an Apply that records what it was given.
type recorder struct {
	mu       sync.Mutex
	versions []string
	applied  chan *resources.Snapshot
	fail     error
	// check, when set, rejects snapshots as a runtime would.
	check func(*resources.Snapshot) error
}

func newRecorder() *recorder { return &recorder{applied: make(chan *resources.Snapshot, 16)} }

func (r *recorder) apply(s *resources.Snapshot, v string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	if r.check != nil {
		if err := r.check(s); err != nil {
			return err
		}
	}
	r.versions = append(r.versions, v)
	r.applied <- s
	return nil
}

type ackNack struct {
	typeURL, nonce, detail string
}

// nextAnswer returns the next request that answers a response (has a
// nonce), skipping pure subscriptions.
func nextAnswer(t *testing.T, f *fakeADS) ackNack {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-f.reqs:
			switch r := m.(type) {
			case *discoveryv3.DiscoveryRequest:
				if r.GetResponseNonce() != "" {
					return ackNack{r.GetTypeUrl(), r.GetResponseNonce(), r.GetErrorDetail().GetMessage()}
				}
			case *discoveryv3.DeltaDiscoveryRequest:
				if r.GetResponseNonce() != "" {
					return ackNack{r.GetTypeUrl(), r.GetResponseNonce(), r.GetErrorDetail().GetMessage()}
				}
			}
		case <-deadline:
			t.Fatal("no ACK/NACK within 10s")
		}
	}
}

func runClient(t *testing.T, o Options) *Client {
	t.Helper()
	c := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c
}

func TestSignatures(t *testing.T) {
	pub, priv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	snap := translateYAML(t, staticYAML, false)
	tamper := func(rs []*discoveryv3.Resource) []*discoveryv3.Resource {
		out := make([]*discoveryv3.Resource, len(rs))
		for i, r := range rs {
			c := proto.Clone(r).(*discoveryv3.Resource)
			// One more byte of a valid field changes the body the
			// signature covers without breaking its decoding: the
			// cluster's alt_stat_name (field 28), a string.
			c.Resource.Value = append(append([]byte(nil), c.Resource.Value...), 0xe2, 0x01, 0x01, 'x')
			out[i] = c
		}
		return out
	}
	tests := []struct {
		name       string
		key        ed25519.PrivateKey
		tamper     bool
		wantDetail string // "" = applied
	}{
		{name: "signed", key: priv},
		{name: "unsigned", key: nil, wantDetail: `rejected signature: signing: resource "a"`},
		{name: "untrusted key", key: otherKey, wantDetail: `rejected signature: signing: resource "a"`},
		{name: "tampered", key: priv, tamper: true, wantDetail: `rejected signature: signing: resource "a"`},
	}
	for _, sotw := range []bool{true, false} {
		for _, tc := range tests {
			name := tc.name + map[bool]string{true: "/sotw", false: "/delta"}[sotw]
			t.Run(name, func(t *testing.T) {
				f, addr := startFake(t)
				rec := newRecorder()
				runClient(t, Options{Address: addr, NodeID: "n1", SotW: sotw, Verifier: signing.NewVerifier(pub), Apply: rec.apply})
				rs := byType(t, snap, tc.key)
				clusters := rs[TypeCluster]
				if tc.tamper {
					clusters = tamper(clusters)
				}
				send := func(typeURL, nonce string, rs []*discoveryv3.Resource) {
					if sotw {
						f.sotw <- sotwResponse(t, typeURL, "v1", nonce, rs, tc.key != nil)
					} else {
						f.delta <- &discoveryv3.DeltaDiscoveryResponse{TypeUrl: typeURL, SystemVersionInfo: "v1", Nonce: nonce, Resources: rs}
					}
				}
				send(TypeCluster, "n-cds", clusters)
				if tc.wantDetail != "" {
					got := nextAnswer(t, f)
					if got.typeURL != TypeCluster || got.nonce != "n-cds" || !strings.Contains(got.detail, tc.wantDetail) {
						t.Fatalf("answer = %+v, want a CDS NACK containing %q", got, tc.wantDetail)
					}
					t.Logf("NACK detail: %s", got.detail)
					send(TypeListener, "n-lds", rs[TypeListener])
					select {
					case <-rec.applied:
						t.Fatal("a config with a rejected signature was applied")
					case <-time.After(200 * time.Millisecond):
					}
					return
				}
				send(TypeListener, "n-lds", rs[TypeListener])
				for range 2 {
					if got := nextAnswer(t, f); got.detail != "" {
						t.Fatalf("NACK %+v", got)
					}
				}
				select {
				case s := <-rec.applied:
					if len(s.Listeners) != 1 || len(s.Clusters) != 1 {
						t.Fatalf("applied %d listeners, %d clusters", len(s.Listeners), len(s.Clusters))
					}
				case <-time.After(10 * time.Second):
					t.Fatal("not applied")
				}
			})
		}
	}
}

// TestWarming checks that a listener naming a route configuration is
// neither applied nor ACKed until the route arrives, and that the client
// subscribes to that route by name.
func TestWarming(t *testing.T) {
	for _, sotw := range []bool{true, false} {
		t.Run(map[bool]string{true: "sotw", false: "delta"}[sotw], func(t *testing.T) {
			f, addr := startFake(t)
			rec := newRecorder()
			runClient(t, Options{Address: addr, NodeID: "n1", SotW: sotw, Apply: rec.apply})
			rs := byType(t, translateYAML(t, staticYAML, true), nil)
			send := func(typeURL, nonce string, rs []*discoveryv3.Resource) {
				if sotw {
					f.sotw <- sotwResponse(t, typeURL, "v1", nonce, rs, false)
				} else {
					f.delta <- &discoveryv3.DeltaDiscoveryResponse{TypeUrl: typeURL, SystemVersionInfo: "v1", Nonce: nonce, Resources: rs}
				}
			}
			send(TypeCluster, "c1", rs[TypeCluster])
			send(TypeListener, "l1", rs[TypeListener])
			// Expect subscriptions to EDS "a" and RDS for the listener's route.
			subs := map[string][]string{}
			deadline := time.After(10 * time.Second)
			for len(subs) < 2 {
				select {
				case m := <-f.reqs:
					switch r := m.(type) {
					case *discoveryv3.DiscoveryRequest:
						if r.GetResponseNonce() != "" {
							t.Fatalf("answered %s before warming finished: %+v", r.GetTypeUrl(), r)
						}
						if len(r.GetResourceNames()) > 0 {
							subs[r.GetTypeUrl()] = r.GetResourceNames()
						}
					case *discoveryv3.DeltaDiscoveryRequest:
						if r.GetResponseNonce() != "" {
							t.Fatalf("answered %s before warming finished: %+v", r.GetTypeUrl(), r)
						}
						if len(r.GetResourceNamesSubscribe()) > 0 {
							subs[r.GetTypeUrl()] = r.GetResourceNamesSubscribe()
						}
					}
				case <-deadline:
					t.Fatalf("subscriptions so far: %v", subs)
				}
			}
			if got := subs[TypeEndpoint]; len(got) != 1 || got[0] != "a" {
				t.Fatalf("EDS subscription %v", got)
			}
			if len(subs[TypeRoute]) != 1 {
				t.Fatalf("RDS subscription %v", subs[TypeRoute])
			}
			select {
			case <-rec.applied:
				t.Fatal("applied before routes and endpoints arrived")
			default:
			}
			send(TypeEndpoint, "e1", rs[TypeEndpoint])
			send(TypeRoute, "r1", rs[TypeRoute])
			select {
			case s := <-rec.applied:
				if len(s.Routes) != 1 || len(s.Endpoints) != 1 {
					t.Fatalf("applied %d routes, %d endpoints", len(s.Routes), len(s.Endpoints))
				}
			case <-time.After(10 * time.Second):
				t.Fatal("not applied")
			}
			acked := map[string]bool{}
			for range 4 {
				a := nextAnswer(t, f)
				if a.detail != "" {
					t.Fatalf("NACK %+v", a)
				}
				acked[a.typeURL] = true
			}
			if len(acked) != 4 {
				t.Fatalf("ACKed types %v", acked)
			}
			if st := c0(t, rec); st == "" {
				t.Fatal("no version")
			}
		})
	}
}

func c0(t *testing.T, r *recorder) string {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.versions, ";")
}

// TestRuntimeRejection checks that an update the runtime rejects is NACKed
// with the runtime's message and that a re-send of the same update is
// answered more and more slowly (no NACK storm).
func TestRuntimeRejection(t *testing.T) {
	f, addr := startFake(t)
	rec := newRecorder()
	rec.fail = errors.New(`cluster "a": type ORIGINAL_DST is not supported`)
	runClient(t, Options{Address: addr, NodeID: "n1", SotW: true, Apply: rec.apply})
	rs := byType(t, translateYAML(t, staticYAML, false), nil)
	f.sotw <- sotwResponse(t, TypeCluster, "v1", "c1", rs[TypeCluster], false)
	f.sotw <- sotwResponse(t, TypeListener, "v1", "l1", rs[TypeListener], false)
	var got []ackNack
	for len(got) < 2 {
		got = append(got, nextAnswer(t, f))
	}
	for _, a := range got {
		if !strings.Contains(a.detail, `cluster "a": type ORIGINAL_DST`) {
			t.Fatalf("answer %+v, want the runtime's error", a)
		}
	}
	// The server re-sends the rejected CDS update: the NACK comes, but
	// not at once.
	start := time.Now()
	f.sotw <- sotwResponse(t, TypeCluster, "v1", "c2", rs[TypeCluster], false)
	a := nextAnswer(t, f)
	if a.nonce != "c2" || a.detail == "" {
		t.Fatalf("answer %+v", a)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("re-sent rejected update answered after %v: no back-off", d)
	}
}

// TestReconnectResumes: after the stream breaks, the client reconnects and
// tells the server what it holds (delta: initial_resource_versions; SotW:
// the accepted version_info), so that nothing is sent again needlessly.
func TestReconnectResumes(t *testing.T) {
	for _, sotw := range []bool{false, true} {
		t.Run(map[bool]string{true: "sotw", false: "delta"}[sotw], func(t *testing.T) {
			f, addr := startFake(t)
			rec := newRecorder()
			c := runClient(t, Options{Address: addr, NodeID: "n1", SotW: sotw, Apply: rec.apply,
				Backoff: Backoff{Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond}})
			rs := byType(t, translateYAML(t, staticYAML, false), nil)
			for _, u := range []string{TypeCluster, TypeListener} {
				if sotw {
					f.sotw <- sotwResponse(t, u, "v1", "x", rs[u], false)
				} else {
					f.delta <- &discoveryv3.DeltaDiscoveryResponse{TypeUrl: u, SystemVersionInfo: "v1", Nonce: "x", Resources: rs[u]}
				}
			}
			for range 2 {
				if a := nextAnswer(t, f); a.detail != "" {
					t.Fatalf("NACK %+v", a)
				}
			}
			f.end <- struct{}{}
			// The new stream's first requests name what the client holds.
			resumed := map[string]bool{}
			deadline := time.After(10 * time.Second)
			for len(resumed) < 2 {
				select {
				case m := <-f.reqs:
					switch r := m.(type) {
					case *discoveryv3.DiscoveryRequest:
						if r.GetResponseNonce() == "" && r.GetVersionInfo() == "v1" {
							resumed[r.GetTypeUrl()] = true
						}
					case *discoveryv3.DeltaDiscoveryRequest:
						if r.GetResponseNonce() == "" && len(r.GetInitialResourceVersions()) > 0 {
							resumed[r.GetTypeUrl()] = r.GetInitialResourceVersions()[resourceName(decodeFirst(t, r.GetTypeUrl(), rs))] == "1"
						}
					}
				case <-deadline:
					t.Fatalf("resumed: %v", resumed)
				}
			}
			for u, ok := range resumed {
				if !ok {
					t.Fatalf("%s resumed with the wrong versions", u)
				}
			}
			if st := c.Status(); !st.Applied || st.FromLKG {
				t.Fatalf("status %+v", st)
			}
		})
	}
}

func decodeFirst(t *testing.T, typeURL string, rs map[string][]*discoveryv3.Resource) proto.Message {
	t.Helper()
	m, err := newMessage(typeURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(rs[typeURL][0].GetResource().GetValue(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	tests := []struct {
		name     string
		attempt  int
		min, max time.Duration
	}{
		{name: "first", attempt: 0, min: 50 * time.Millisecond, max: 100 * time.Millisecond},
		{name: "third", attempt: 2, min: 200 * time.Millisecond, max: 400 * time.Millisecond},
		{name: "capped", attempt: 30, min: 500 * time.Millisecond, max: time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for range 100 {
				if d := b.delay(tc.attempt); d < tc.min || d > tc.max {
					t.Fatalf("delay(%d) = %v, want [%v, %v]", tc.attempt, d, tc.min, tc.max)
				}
			}
		})
	}
}
