package lb

import (
	"container/heap"
	"sync/atomic"

	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
)

// roundRobin cycles through the view's hosts with one shared atomic
// counter. With unequal weights it cycles through a precomputed sequence in
// which each host appears weight times, interleaved earliest-deadline-first
// like Envoy's EDF scheduler, so a heavy host's picks are spread out rather
// than bunched.
type roundRobin struct {
	p pool[[]uint32] // per view: the weighted sequence of indices into eps, nil when weights are equal
	_ [64]byte       // keep the hot counter off the pool's cache line
	n atomic.Uint64
}

var _ Balancer = (*roundRobin)(nil)

func newRoundRobin(eps []*endpoint.Endpoint) *roundRobin {
	b := &roundRobin{}
	b.p.init(eps, func(eps []*endpoint.Endpoint) []uint32 {
		if !weightsDiffer(eps) {
			return nil
		}
		return weightedSequence(eps)
	})
	return b
}

func (b *roundRobin) Pick(*Context) *endpoint.Endpoint {
	var clk clock
	v := b.p.get(&clk)
	if len(v.eps) == 0 {
		return nil // no host available and panic disabled: no host, as Envoy
	}
	i := b.n.Add(1) - 1
	seq := v.data
	n := uint64(len(v.eps))
	if seq != nil {
		n = uint64(len(seq))
	}
	at := func(k uint64) *endpoint.Endpoint {
		if seq != nil {
			return v.eps[seq[k%n]]
		}
		return v.eps[k%n]
	}
	if v.panic {
		return at(i)
	}
	// Walk on from an unavailable host; the view is stale, so the next pick
	// rebuilds it without that host and the walk is rare.
	for k := range uint64(len(v.eps)) {
		if e := at(i + k); up(e, &clk) {
			if k > 0 {
				b.p.stale(v)
			}
			return e
		}
	}
	return b.p.rescue(v, &clk)
}

// weightedSequence lays out each host weight times (weights reduced by
// their gcd and, past maxWeightedSequence slots, scaled down) in
// earliest-deadline-first order: host i's k-th slot has deadline k/w_i.
func weightedSequence(eps []*endpoint.Endpoint) []uint32 {
	w := make([]uint64, len(eps))
	var g, total uint64
	for i, e := range eps {
		w[i] = weightOf(e)
		g = gcd(g, w[i])
	}
	for i := range w {
		w[i] /= g
		total += w[i]
	}
	if total > maxWeightedSequence {
		scaled := uint64(0)
		for i := range w {
			w[i] = max(1, w[i]*maxWeightedSequence/total)
			scaled += w[i]
		}
		total = scaled
	}
	h := make(edfHeap, len(eps))
	for i := range h {
		h[i] = edfEntry{idx: uint32(i), k: 1, w: w[i]}
	}
	heap.Init(&h)
	seq := make([]uint32, 0, total)
	for range total {
		e := &h[0]
		seq = append(seq, e.idx)
		e.k++
		heap.Fix(&h, 0)
	}
	return seq
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// edfEntry is a host's next deadline k/w, compared exactly by
// cross-multiplication.
type edfEntry struct {
	idx  uint32
	k, w uint64
}

type edfHeap []edfEntry

func (h edfHeap) Len() int { return len(h) }
func (h edfHeap) Less(i, j int) bool {
	a, b := h[i].k*h[j].w, h[j].k*h[i].w
	if a != b {
		return a < b
	}
	return h[i].idx < h[j].idx
}
func (h edfHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *edfHeap) Push(x any)   { *h = append(*h, x.(edfEntry)) }
func (h *edfHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
