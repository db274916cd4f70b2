package lb

import (
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
)

// maglev is Google's Maglev consistent hash (Eisenbud et al., NSDI 2016) as
// Envoy builds it: a prime-sized lookup table filled by each host walking
// its own permutation (offset = xxHash64(address) mod M, skip =
// xxHash64(address, seed 1) mod (M-1) + 1), heavier hosts taking turns more
// often. A request goes to table[hash mod M].
//
// The table is built once over all hosts, sorted by address so the layout
// does not depend on EDS order. An unavailable host is skipped by walking
// forward in the table; table neighbours are unrelated hosts, so its keys
// spread over the others, as a rebuild would do. Keys of available hosts
// never move, which a rebuild would not guarantee.
type maglev struct {
	p     pool[struct{}]
	table []uint32 // index into p.all
}

var _ Balancer = (*maglev)(nil)

func newMaglev(eps []*endpoint.Endpoint, m uint64) *maglev {
	b := &maglev{}
	b.p.init(eps, nil)

	order := make([]int, len(eps))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, c int) int { return strings.Compare(eps[a].Address, eps[c].Address) })

	type entry struct {
		host               uint32
		offset, skip, next uint64
		weight, target     float64
	}
	var total, maxW float64
	for _, e := range eps {
		total += float64(weightOf(e))
	}
	entries := make([]entry, len(order))
	for k, i := range order {
		key := []byte(eps[i].Address)
		w := float64(weightOf(eps[i])) / total
		maxW = max(maxW, w)
		entries[k] = entry{
			host:   uint32(i),
			offset: xxh64(key, 0) % m,
			skip:   xxh64(key, 1)%(m-1) + 1,
			weight: w,
		}
	}

	const unset = ^uint32(0)
	table := make([]uint32, m)
	for i := range table {
		table[i] = unset
	}
	filled := uint64(0)
	for iter := 1.0; filled < m; iter++ {
		for k := range entries {
			if filled == m {
				break
			}
			e := &entries[k]
			// A host of the largest weight takes a slot every round; one of
			// a third of that weight every third round.
			if iter*e.weight < e.target {
				continue
			}
			e.target += maxW
			c := (e.offset + e.skip*e.next) % m
			for table[c] != unset {
				e.next++
				c = (e.offset + e.skip*e.next) % m
			}
			table[c] = e.host
			e.next++
			filled++
		}
	}
	b.table = table
	return b
}

func (b *maglev) Pick(c *Context) *endpoint.Endpoint {
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
	m := uint64(len(b.table))
	i := h % m
	if v.panic {
		return b.p.all[b.table[i]]
	}
	for range min(m, maxWalk) {
		h := b.table[i]
		if e := b.p.all[h]; up(e, &clk) {
			return e
		}
		if v.has(h) {
			b.p.stale(v) // the panic decision may be out of date
		}
		if i++; i == m {
			i = 0
		}
	}
	return b.p.rescue(v, &clk)
}
