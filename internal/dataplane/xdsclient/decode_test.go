package xdsclient

import (
	"fmt"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/shared/resources"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// FuzzDecode feeds arbitrary bytes to the path every SotW resource takes:
// wrapper detection, unwrapping, decoding and the name check, with and
// without signature verification. It must never panic, and a resource it
// accepts under a trust root must verify.
func FuzzDecode(f *testing.F) {
	pub, priv, err := signing.GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	body, err := resources.NewAny(&clusterv3.Cluster{Name: "a"})
	if err != nil {
		f.Fatal(err)
	}
	md, err := signing.SignResource(signing.NewSigner(priv), "a", body)
	if err != nil {
		f.Fatal(err)
	}
	wrapped, err := signing.WrapResource(&discoveryv3.Resource{Name: "a", Resource: body, Metadata: md})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(true, wrapped.GetValue())
	f.Add(false, body.GetValue())
	f.Add(true, []byte{0x0a, 0x01, 'a'})
	verify := verifyFunc(func(name string, b *anypb.Any, m *corev3.Metadata) error {
		return signing.VerifyResource(signing.NewVerifier(pub), name, b, m)
	})
	f.Fuzz(func(t *testing.T, wrap bool, b []byte) {
		a := &anypb.Any{TypeUrl: TypeCluster, Value: b}
		if wrap {
			a.TypeUrl = resourceWrapperType
		}
		name, version, inner, m, err := unwrapAny(a)
		if err != nil {
			return
		}
		if _, err := decodeResource(TypeCluster, name, version, inner, m, nil); err != nil {
			return
		}
		if e, err := decodeResource(TypeCluster, name, version, inner, m, verify); err == nil {
			if verr := verify(e.name, e.body, e.metadata); verr != nil {
				t.Fatalf("accepted %q but it does not verify: %v", e.name, verr)
			}
		}
	})
}

// BenchmarkAssemble measures what a response costs the client once decoded:
// reference walk and snapshot assembly over 200 EDS clusters behind one
// listener.
func BenchmarkAssemble(b *testing.B) {
	y := "listeners:\n  - name: web\n    address: 127.0.0.1:1\n    protocol: http\n    virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes:\n"
	cl := "clusters:\n"
	for i := range 200 {
		y += fmt.Sprintf("          - { match: { path_prefix: /c%d }, cluster: c%d }\n", i, i)
		cl += fmt.Sprintf("  - { name: c%d, endpoints: [127.0.0.1:%d] }\n", i, 2000+i)
	}
	snap := translateYAML(b, y+cl, true)
	types := map[string]*typeState{}
	for _, u := range typeOrder {
		types[u] = newTypeState(u)
		types[u].received.seen = true
	}
	for u, rs := range byType(b, snap, nil) {
		for _, r := range rs {
			e, err := decodeResource(u, r.GetName(), r.GetVersion(), r.GetResource(), nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			types[u].received.resources[e.name] = e
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		a, err := assemble(types, pickReceived, nil)
		if err != nil || len(a.snap.Clusters) != 200 {
			b.Fatal(err)
		}
	}
}
