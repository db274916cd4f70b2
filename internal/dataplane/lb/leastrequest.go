package lb

import (
	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
)

// leastRequest samples choices hosts (power of two choices by default) and
// takes the one with the fewest requests in flight per unit of weight.
//
// Envoy's weighted variant runs an EDF scheduler over weight/(active+1);
// that needs a lock. Here candidates are instead sampled in proportion to
// weight and compared on active/weight (ties go to the first sampled).
// Idle hosts then receive traffic exactly in proportion to weight, and under
// load the comparison steers towards hosts whose in-flight count is low for
// their weight, which is the same steady state: in-flight requests
// proportional to weight.
type leastRequest struct {
	p       pool[*alias]
	choices int
}

var _ Balancer = (*leastRequest)(nil)

func newLeastRequest(eps []*endpoint.Endpoint, choices int) *leastRequest {
	b := &leastRequest{choices: choices}
	b.p.init(eps, newAlias)
	return b
}

func (b *leastRequest) Pick(*Context) *endpoint.Endpoint {
	var clk clock
	v := b.p.get(&clk)
	if len(v.eps) == 0 {
		return nil // no host available and panic disabled: no host, as Envoy
	}
	var best *endpoint.Endpoint
	var bestActive uint64
	for range b.choices {
		e := v.eps[sample(v.data, len(v.eps))]
		if !v.panic && !up(e, &clk) {
			b.p.stale(v)
			continue
		}
		a := uint64(max(e.Active.Load(), 0))
		// a/w < bestActive/bestW, cross-multiplied.
		if best == nil || a*weightOf(best) < bestActive*weightOf(e) {
			best, bestActive = e, a
		}
	}
	if best != nil {
		return best
	}
	return b.p.rescue(v, &clk)
}
