package runtime

import (
	"testing"

	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/translate"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

// An EDS cluster whose eds_cluster_config names a service_name takes the
// ClusterLoadAssignment of that name (other control planes set it; several
// clusters may share one assignment).
func TestEDSServiceName(t *testing.T) {
	c, err := config.Parse("eds.yaml", []byte(cfg(testutil.Addr(t), "a")))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := translate.TranslateWith(c, translate.Options{ADS: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range snap.Clusters {
		if cl.GetName() != "a" {
			continue
		}
		if cl.GetEdsClusterConfig() == nil {
			t.Fatal("cluster a is not EDS in the ADS form")
		}
		cl.GetEdsClusterConfig().ServiceName = "svc-a"
	}
	for _, e := range snap.Endpoints {
		if e.GetClusterName() == "a" {
			e.ClusterName = "svc-a"
		}
	}
	if err := snap.Validate(); err != nil {
		t.Fatal(err)
	}
	rt := newRuntime(t)
	if err := rt.Apply(snap, "test"); err != nil {
		t.Fatal(err)
	}
	got := rt.Current().Clusters.Get("a")
	if got == nil || len(got.Endpoints) != 1 {
		t.Fatalf("cluster a endpoints = %v, want the one of assignment svc-a", got)
	}
}
