package config

import (
	"hash/fnv"
	"slices"
)

// Canary shares: what an extension canary's percent is a share of.
const (
	CanaryByRequests = "requests"
	CanaryByProxies  = "proxies"
)

// ServedByMeshKit accepts what only MeshKit can carry out: extension
// canaries by share of proxies (MeshKit resolves them per proxy with
// ResolveProxyCanaries before translating).
func ServedByMeshKit() ParseOption {
	return func(o *parseOptions) { o.meshKit = true }
}

// ProxyBuckets is the number of canary buckets proxies are hashed into: a
// percent is a number of buckets.
const ProxyBuckets = 100

// ProxyBucket is the canary bucket of a node: stable for a node id, so a
// proxy stays in or out of a canary while its percent does not change, and
// raising the percent only adds proxies (bucket < percent is in).
func ProxyBucket(nodeID string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(nodeID))
	return h.Sum32() % ProxyBuckets
}

// InProxyCanary reports whether a proxy of the given bucket runs the new
// package of a canary by proxies at percent.
func InProxyCanary(bucket, percent uint32) bool { return bucket < percent }

// ExtensionChoice is the package one extension entry runs on a proxy.
type ExtensionChoice struct {
	Name    string
	Package string
	// Role is "" without a canary; "canary" or "previous" for a canary by
	// proxies (this proxy got the new or the previous package); "split" for
	// a canary by requests (the proxy runs both).
	Role string
	// Percent is the canary's percent (canary roles only).
	Percent uint32
}

// HasProxyCanary reports whether c holds an extension canary by proxies.
func (c *Config) HasProxyCanary() bool {
	for _, l := range c.Listeners {
		for _, f := range l.Filters {
			if x := f.Extension; x != nil && x.Canary != nil && x.Canary.By == CanaryByProxies {
				return true
			}
		}
	}
	return false
}

// ResolveProxyCanaries returns the config one proxy of the given bucket
// gets: every canary by proxies becomes a plain extension running the new
// package (bucket in the canary) or the previous one with its config
// (bucket out). c is not changed; the result shares everything it does not
// rewrite. It also lists, per extension entry, the package the proxy runs.
func (c *Config) ResolveProxyCanaries(bucket uint32) (*Config, []ExtensionChoice) {
	out := *c
	var choices []ExtensionChoice
	copied := false
	for i := range out.Listeners {
		fs := out.Listeners[i].Filters
		for j, f := range fs {
			x := f.Extension
			if x == nil {
				continue
			}
			ch := ExtensionChoice{Name: x.Name, Package: x.Package}
			if x.Canary != nil {
				ch.Percent = x.Canary.Percent
				ch.Role = "split"
			}
			if x.Canary == nil || x.Canary.By != CanaryByProxies {
				choices = append(choices, ch)
				continue
			}
			if !copied {
				out.Listeners = slices.Clone(c.Listeners)
				copied = true
			}
			if &out.Listeners[i].Filters[0] == &c.Listeners[i].Filters[0] {
				out.Listeners[i].Filters = slices.Clone(fs)
			}
			nx := *x
			nx.Canary = nil
			if InProxyCanary(bucket, x.Canary.Percent) {
				ch.Role = "canary"
			} else {
				ch.Role = "previous"
				nx.Package = x.Canary.PreviousPackage
				if x.Canary.PreviousConfig != "" {
					nx.Config = x.Canary.PreviousConfig
				}
				ch.Package = nx.Package
			}
			out.Listeners[i].Filters[j].Extension = &nx
			choices = append(choices, ch)
		}
	}
	return &out, choices
}

// ProxyCanarySides is the set of distinct configs ResolveProxyCanaries can
// return, as one representative bucket per side: a config with canaries by
// proxies at percents p1 < p2 < ... has a side per interval. MeshKit
// validates each and builds one snapshot per side, not per proxy.
func (c *Config) ProxyCanarySides() []uint32 {
	cuts := []uint32{0}
	for _, l := range c.Listeners {
		for _, f := range l.Filters {
			if x := f.Extension; x != nil && x.Canary != nil && x.Canary.By == CanaryByProxies && x.Canary.Percent < ProxyBuckets {
				cuts = append(cuts, x.Canary.Percent)
			}
		}
	}
	slices.Sort(cuts)
	return slices.Compact(cuts)
}

// ProxyCanarySide names the side of the config a bucket falls in: equal
// for two buckets exactly when ResolveProxyCanaries gives them the same
// config.
func (c *Config) ProxyCanarySide(bucket uint32) uint32 {
	side := uint32(0)
	for _, cut := range c.ProxyCanarySides() {
		if bucket >= cut {
			side = cut
		}
	}
	return side
}
