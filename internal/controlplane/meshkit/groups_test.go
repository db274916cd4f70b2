package meshkit

import (
	"context"
	"fmt"
	"testing"

	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// BenchmarkRebuild measures a full rebuild with nodes spread over canary
// buckets: the groups of one side share one translated snapshot, which the
// cache indexes once for all of them, so an extra group costs little more
// than a map lookup and waking its streams (none here): 100 groups on 2
// sides should cost about what 2 groups do.
func BenchmarkRebuild(b *testing.B) {
	for _, tc := range []struct {
		name   string
		nodes  int
		canary bool
	}{
		{name: "1-node", nodes: 1},
		{name: "100-nodes", nodes: 100},
		{name: "100-nodes-canary", nodes: 100, canary: true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			m := newRolloutMeshKit(b)
			if tc.canary {
				if _, err := m.Canary(context.Background(), "stamp", "store:stamp@2.0.0", 50, config.CanaryByProxies); err != nil {
					b.Fatal(err)
				}
			}
			groups := map[string]bool{}
			for i := 0; len(groups) < min(tc.nodes, config.ProxyBuckets) && i < 100000; i++ {
				g, err := m.group(omniNode(fmt.Sprintf("node-%d", i)))
				if err != nil {
					b.Fatal(err)
				}
				groups[g] = true
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				m.rebuildAll()
			}
			b.ReportMetric(float64(len(groups)), "groups")
		})
	}
}
