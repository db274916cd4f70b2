package signing_test

import (
	"crypto/ed25519"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// testKey returns a fixed key pair, so that fuzz seeds under testdata stay
// valid signatures (ed25519 signing is deterministic).
func testKey(n byte) (ed25519.PublicKey, ed25519.PrivateKey) {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = n + byte(i)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	return priv.Public().(ed25519.PublicKey), priv
}

func testCluster(t testing.TB, name string) *anypb.Any {
	t.Helper()
	a, err := anypb.New(&clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(250_000_000),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}
