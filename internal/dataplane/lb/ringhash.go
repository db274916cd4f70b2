package lb

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"

	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
)

// maxWalk bounds how far a hashing balancer walks past unavailable entries
// before falling back to a scan. With at least half the hosts available
// (otherwise we would be in panic mode and not walk) a longer run only
// happens while the view is stale.
const maxWalk = 1024

// ringHash is Envoy's ketama-style ring: each host owns points hashed from
// "address_i" (xxHash64), their number proportional to weight, and a
// request goes to the first point at or after its hash. Points are laid out
// as in Envoy's RingHashLoadBalancer so that, for the same hosts and sizes,
// a key maps to the same host.
//
// The ring is built once over all hosts. An unavailable host is skipped by
// walking to the next point, which is exactly where its keys would go if
// the ring were rebuilt without it, so no rebuild is needed.
type ringHash struct {
	p      pool[struct{}]
	hashes []uint64 // sorted
	hosts  []uint32 // hosts[i] owns hashes[i]; index into p.all
}

var _ Balancer = (*ringHash)(nil)

func newRingHash(eps []*endpoint.Endpoint, minSize, maxSize uint64) *ringHash {
	b := &ringHash{}
	b.p.init(eps, nil)

	var total float64
	for _, e := range eps {
		total += float64(weightOf(e))
	}
	minNorm := math.Inf(1)
	for _, e := range eps {
		minNorm = min(minNorm, float64(weightOf(e))/total)
	}
	// Scale so the lightest host gets a whole number of points, at least
	// minSize points in all, capped at maxSize (Envoy's formula).
	scale := min(math.Ceil(minNorm*float64(minSize))/minNorm, float64(maxSize))
	size := int(math.Ceil(scale))

	type point struct {
		hash uint64
		host uint32
	}
	ring := make([]point, 0, size)
	var current, target float64
	var key []byte
	for hi, e := range eps {
		key = append(key[:0], e.Address...)
		key = append(key, '_')
		base := len(key)
		target += scale * float64(weightOf(e)) / total
		for i := 0; current < target; i++ {
			key = strconv.AppendInt(key[:base], int64(i), 10)
			ring = append(ring, point{hash: xxh64(key, 0), host: uint32(hi)})
			current++
		}
	}
	slices.SortFunc(ring, func(a, b point) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return int(a.host) - int(b.host)
	})
	b.hashes = make([]uint64, len(ring))
	b.hosts = make([]uint32, len(ring))
	for i, pt := range ring {
		b.hashes[i], b.hosts[i] = pt.hash, pt.host
	}
	return b
}

// lookup returns the index of the first point at or after h, wrapping.
func (b *ringHash) lookup(h uint64) int {
	lo, hi := 0, len(b.hashes)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if b.hashes[mid] < h {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == len(b.hashes) {
		return 0
	}
	return lo
}

func (b *ringHash) Pick(c *Context) *endpoint.Endpoint {
	var clk clock
	v := b.p.get(&clk)
	if len(v.eps) == 0 {
		return nil // no host available and panic disabled: no host, as Envoy
	}
	var h uint64
	if c != nil && c.HasHash {
		h = c.Hash
	} else {
		h = rand.Uint64()
	}
	i := b.lookup(h)
	if v.panic {
		return b.p.all[b.hosts[i]]
	}
	n := len(b.hosts)
	for k := range min(n, maxWalk) {
		j := i + k
		if j >= n {
			j -= n
		}
		h := b.hosts[j]
		if e := b.p.all[h]; up(e, &clk) {
			return e
		}
		if v.has(h) {
			b.p.stale(v) // the panic decision may be out of date
		}
	}
	return b.p.rescue(v, &clk)
}
