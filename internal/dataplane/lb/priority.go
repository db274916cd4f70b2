package lb

import (
	"errors"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
)

// Level is one EDS priority level (0 is the highest) and its localities.
type Level struct {
	Localities []Locality
}

// Locality is one locality of a level with its load-balancing weight (the
// sum of its endpoints' weights when EDS sets none).
type Locality struct {
	Name      string
	Weight    uint32
	Endpoints []*endpoint.Endpoint
}

// PriorityOptions are a cluster's priority and locality settings, Envoy's
// semantics: traffic goes to the highest priority while it is healthy
// enough, spills to lower ones as its health drops (the overprovisioning
// factor lets a level at 1/1.4 = 72% health still take all traffic), and
// each level panics below the panic threshold only while the levels
// together cannot take the load.
type PriorityOptions struct {
	Policy  Policy
	Options Options
	// OverprovisioningFactor is EDS's overprovisioning_factor / 100
	// (default 1.4).
	OverprovisioningFactor float64
	// PanicThreshold is healthy_panic_threshold in percent; nil means
	// Envoy's 50, 0 never panics.
	PanicThreshold *float64
	// LocalityWeighted picks a locality by its weight scaled by its
	// availability, then a host in it (locality_weighted_lb_config); else
	// the policy spans the whole level.
	LocalityWeighted bool
}

type child interface {
	Balancer
	setPanicOff(bool)
	setPanicThreshold(permille uint32)
	generation() uint64
}

type prioLevel struct {
	all      []*endpoint.Endpoint // every host of the level
	children []child              // one per locality, or one for the level
	weights  []float64            // the localities' configured weights
	locEps   [][]*endpoint.Endpoint
}

// prioState is one computation of where traffic goes. Immutable but next.
type prioState struct {
	cumLoad []float64   // cumulative share per level, last == 1
	cumLoc  [][]float64 // per level: cumulative locality shares (nil: one child)
	gens    [][]uint64  // per level and child: the child's view generation seen
	next    atomic.Int64
}

type priority struct {
	levels  []prioLevel
	overp   float64
	permill uint32
	cur     atomic.Pointer[prioState]
	busy    atomic.Bool
}

// NewPriority builds a balancer over levels. A single level without
// locality weighting is the plain policy balancer.
func NewPriority(levels []Level, o PriorityOptions) (Balancer, error) {
	permille := uint32(defaultPanicPermille)
	if o.PanicThreshold != nil {
		t := *o.PanicThreshold
		if t < 0 || t > 100 || math.IsNaN(t) {
			return nil, errors.New("lb: healthy_panic_threshold must be within 0-100%")
		}
		permille = uint32(math.Round(t * 10))
	}
	if o.OverprovisioningFactor == 0 {
		o.OverprovisioningFactor = 1.4
	}
	if o.OverprovisioningFactor < 1 {
		return nil, errors.New("lb: overprovisioning_factor must be at least 100")
	}
	build := func(eps []*endpoint.Endpoint) (child, error) {
		b, err := New(o.Policy, eps, o.Options)
		if err != nil {
			return nil, err
		}
		c, ok := b.(child)
		if !ok { // an empty balancer
			return emptyChild{}, nil
		}
		if permille != defaultPanicPermille {
			c.setPanicThreshold(permille)
		}
		return c, nil
	}
	if len(levels) == 1 && !o.LocalityWeighted {
		var eps []*endpoint.Endpoint
		for _, l := range levels[0].Localities {
			eps = append(eps, l.Endpoints...)
		}
		return build(eps)
	}
	p := &priority{overp: o.OverprovisioningFactor, permill: permille}
	for _, lv := range levels {
		var pl prioLevel
		for _, loc := range lv.Localities {
			pl.all = append(pl.all, loc.Endpoints...)
		}
		if o.LocalityWeighted {
			for _, loc := range lv.Localities {
				c, err := build(loc.Endpoints)
				if err != nil {
					return nil, err
				}
				pl.children = append(pl.children, c)
				pl.weights = append(pl.weights, float64(loc.Weight))
				pl.locEps = append(pl.locEps, loc.Endpoints)
			}
		} else {
			c, err := build(pl.all)
			if err != nil {
				return nil, err
			}
			pl.children = []child{c}
		}
		p.levels = append(p.levels, pl)
	}
	p.busy.Store(true)
	p.refresh(time.Now())
	p.busy.Store(false)
	return p, nil
}

func (p *priority) Pick(c *Context) *endpoint.Endpoint {
	var clk clock
	st := p.cur.Load()
	if n := st.next.Load(); n != never && clk.now().UnixNano() >= n && p.busy.CompareAndSwap(false, true) {
		st = p.refresh(clk.now())
		p.busy.Store(false)
	}
	li := pickCum(st.cumLoad)
	lv := &p.levels[li]
	ci := 0
	if cl := st.cumLoc[li]; cl != nil {
		ci = pickCum(cl)
	}
	ch := lv.children[ci]
	e := ch.Pick(c)
	// A child that rebuilt its view since (it met a host gone bad or back)
	// or that had to give an unavailable host means the distribution is
	// due for a recomputation; one load and a compare when nothing changed.
	if ch.generation() != st.gens[li][ci] || e != nil && !up(e, &clk) {
		st.next.Store(0)
	}
	return e
}

// refresh computes the priority load (Envoy's algorithm) and the locality
// shares from the hosts' availability now; the caller holds busy.
func (p *priority) refresh(now time.Time) *prioState {
	n := len(p.levels)
	health := make([]float64, n) // overprovisioned availability, capped at 100
	avail := make([]float64, n)  // plain availability in percent
	allUp := true
	total, hosts := 0.0, 0
	for i, lv := range p.levels {
		up := 0
		for _, e := range lv.all {
			if e.Available(now) {
				up++
			}
		}
		if up != len(lv.all) {
			allUp = false
		}
		hosts += len(lv.all)
		if len(lv.all) > 0 {
			avail[i] = 100 * float64(up) / float64(len(lv.all))
			health[i] = math.Min(100, p.overp*avail[i])
		}
		total += health[i]
	}
	normalized := math.Min(100, total)
	load := make([]float64, n)
	switch {
	case normalized == 0:
		// Everything is down: every level panics and takes load by its
		// share of the hosts (Envoy's total panic).
		for i, lv := range p.levels {
			if hosts > 0 {
				load[i] = float64(len(lv.all)) / float64(hosts)
			}
		}
	default:
		left := 100.0
		for i := range n {
			l := math.Min(left, health[i]*100/normalized)
			load[i] = l / 100
			left -= l
		}
	}
	st := &prioState{cumLoad: cumulate(load), cumLoc: make([][]float64, n), gens: make([][]uint64, n)}
	for i, lv := range p.levels {
		// Levels panic (by their own threshold) only when the levels
		// together are short of available hosts.
		off := normalized >= 100
		st.gens[i] = make([]uint64, len(lv.children))
		for j, c := range lv.children {
			c.setPanicOff(off)
			st.gens[i][j] = c.generation()
		}
		if lv.weights == nil {
			continue
		}
		eff := make([]float64, len(lv.weights))
		sum := 0.0
		for j, eps := range lv.locEps {
			if len(eps) == 0 {
				continue
			}
			up := 0
			for _, e := range eps {
				if e.Available(now) {
					up++
				}
			}
			// A locality's weight is scaled by its availability,
			// overprovisioned like a level's.
			eff[j] = lv.weights[j] * math.Min(1, p.overp*float64(up)/float64(len(eps)))
			sum += eff[j]
		}
		if sum == 0 {
			copy(eff, lv.weights) // the level is in panic: configured weights
		}
		st.cumLoc[i] = cumulate(eff)
	}
	next := now.UnixNano() + int64(refreshInterval)
	if allUp {
		next = never
	}
	st.next.Store(next)
	p.cur.Store(st)
	return st
}

func cumulate(w []float64) []float64 {
	out := make([]float64, len(w))
	sum := 0.0
	for _, x := range w {
		sum += x
	}
	acc := 0.0
	for i, x := range w {
		if sum > 0 {
			acc += x / sum
		} else {
			acc = float64(i+1) / float64(len(w))
		}
		out[i] = acc
	}
	out[len(out)-1] = 1
	return out
}

// pickCum picks an index by cumulative shares.
func pickCum(cum []float64) int {
	if cum[0] >= 1 {
		return 0 // the common case: everything to the first
	}
	r := rand.Float64()
	for i, c := range cum {
		if r < c {
			return i
		}
	}
	return len(cum) - 1
}

type emptyChild struct{ empty }

func (emptyChild) setPanicOff(bool)         {}
func (emptyChild) setPanicThreshold(uint32) {}
func (emptyChild) generation() uint64       { return 0 }

// The policies' hooks for the priority layer.
func (b *roundRobin) setPanicOff(off bool)          { b.p.setPanicOff(off) }
func (b *roundRobin) generation() uint64            { return b.p.gen.Load() }
func (b *roundRobin) setPanicThreshold(pm uint32)   { b.p.setPanicThreshold(pm) }
func (b *leastRequest) setPanicOff(off bool)        { b.p.setPanicOff(off) }
func (b *leastRequest) generation() uint64          { return b.p.gen.Load() }
func (b *leastRequest) setPanicThreshold(pm uint32) { b.p.setPanicThreshold(pm) }
func (b *random) setPanicOff(off bool)              { b.p.setPanicOff(off) }
func (b *random) generation() uint64                { return b.p.gen.Load() }
func (b *random) setPanicThreshold(pm uint32)       { b.p.setPanicThreshold(pm) }
func (b *ringHash) setPanicOff(off bool)            { b.p.setPanicOff(off) }
func (b *ringHash) generation() uint64              { return b.p.gen.Load() }
func (b *ringHash) setPanicThreshold(pm uint32)     { b.p.setPanicThreshold(pm) }
func (b *maglev) setPanicOff(off bool)              { b.p.setPanicOff(off) }
func (b *maglev) generation() uint64                { return b.p.gen.Load() }
func (b *maglev) setPanicThreshold(pm uint32)       { b.p.setPanicThreshold(pm) }
