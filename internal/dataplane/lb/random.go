package lb

import (
	"math/rand/v2"

	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
)

// alias is Vose's alias table: a weighted sample costs one random number
// and one comparison whatever the number of hosts.
type alias struct {
	// threshold[i] is the chance (scaled to 1<<32) of keeping slot i rather
	// than taking alias[i].
	threshold []uint64
	alias     []uint32
}

// newAlias returns nil when the weights are equal (uniform sampling is
// cheaper).
func newAlias(eps []*endpoint.Endpoint) *alias {
	if !weightsDiffer(eps) {
		return nil
	}
	n := len(eps)
	var total float64
	for _, e := range eps {
		total += float64(weightOf(e))
	}
	scaled := make([]float64, n)
	var small, large []int
	for i, e := range eps {
		scaled[i] = float64(weightOf(e)) * float64(n) / total
		if scaled[i] < 1 {
			small = append(small, i)
		} else {
			large = append(large, i)
		}
	}
	a := &alias{threshold: make([]uint64, n), alias: make([]uint32, n)}
	for len(small) > 0 && len(large) > 0 {
		s, l := small[len(small)-1], large[len(large)-1]
		small = small[:len(small)-1]
		a.threshold[s] = uint64(scaled[s] * (1 << 32))
		a.alias[s] = uint32(l)
		scaled[l] -= 1 - scaled[s]
		if scaled[l] < 1 {
			large = large[:len(large)-1]
			small = append(small, l)
		}
	}
	// Whatever is left is 1 up to rounding: always keep it.
	for _, i := range append(small, large...) {
		a.threshold[i] = 1 << 32
		a.alias[i] = uint32(i)
	}
	return a
}

// sample returns an index into the view's hosts: weighted through a when it
// is non-nil, uniform over n otherwise.
func sample(a *alias, n int) int {
	r := rand.Uint64()
	i := int(((r >> 32) * uint64(n)) >> 32)
	if a == nil || r&(1<<32-1) < a.threshold[i] {
		return i
	}
	return int(a.alias[i])
}

// random picks a host at random, weighted when weights differ.
type random struct {
	p pool[*alias]
}

var _ Balancer = (*random)(nil)

func newRandom(eps []*endpoint.Endpoint) *random {
	b := &random{}
	b.p.init(eps, newAlias)
	return b
}

func (b *random) Pick(*Context) *endpoint.Endpoint {
	var clk clock
	v := b.p.get(&clk)
	if len(v.eps) == 0 {
		return nil // no host available and panic disabled: no host, as Envoy
	}
	n := len(v.eps)
	i := sample(v.data, n)
	if v.panic {
		return v.eps[i]
	}
	for k := range n {
		j := i + k
		if j >= n {
			j -= n
		}
		if e := v.eps[j]; up(e, &clk) {
			if k > 0 {
				b.p.stale(v)
			}
			return e
		}
	}
	return b.p.rescue(v, &clk)
}
