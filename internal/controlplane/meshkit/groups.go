package meshkit

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/omnirelay/omnirelay/internal/shared/capability"
	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// groupKey is what decides a node's snapshot: its kind and capabilities
// and, for OmniRelay nodes, its canary bucket. A stream's group is fixed
// when it opens, so the bucket is part of the key even with no canary
// running: a canary started later moves no stream, it only gives the
// groups of the buckets below its percent the new package. Groups on the
// same side of every canary share one built snapshot (rebuildAll), so
// the number of distinct snapshots is the number of capability sets times
// the number of canary sides (1 with no canary by proxies, 2 with one).
type groupKey struct {
	caps   capability.Set
	bucket uint32
	// fp is caps' kind and fingerprint, computed once (a rebuild needs it
	// for every group).
	fp string
}

// stableBucket is the bucket of nodes that are never in a canary by
// proxies (Envoy and gRPC clients run no OmniRelay extension): the last
// one, out of every canary below 100%.
const stableBucket = config.ProxyBuckets - 1

func groupOf(node *corev3.Node) groupKey {
	k := groupKey{caps: capability.FromNode(node), bucket: stableBucket}
	k.fp = string(k.caps.Kind) + "/" + k.caps.Fingerprint()
	if k.caps.Kind == capability.KindOmniRelay {
		k.bucket = config.ProxyBucket(node.GetId())
	}
	return k
}

// base names the capability set.
func (k groupKey) base() string { return k.fp }

// name is the cache group.
func (k groupKey) name() string {
	if k.caps.Kind != capability.KindOmniRelay {
		return k.base()
	}
	return fmt.Sprintf("%s/b%02d", k.base(), k.bucket)
}
