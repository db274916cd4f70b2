package lb

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
)

func named(prefix string, n int) []*endpoint.Endpoint {
	out := make([]*endpoint.Endpoint, n)
	for i := range out {
		out[i] = endpoint.New(fmt.Sprintf("%s%d:80", prefix, i), 1)
	}
	return out
}

// shares picks n times (the first picks let the layer notice changes) and
// returns the share of picks per host.
func shares(b Balancer, n int) map[string]float64 {
	for range 200 {
		b.Pick(nil)
	}
	count := map[string]float64{}
	for range n {
		count[b.Pick(nil).Address]++
	}
	for k := range count {
		count[k] /= float64(n)
	}
	return count
}

func sumPrefix(s map[string]float64, prefix string) float64 {
	t := 0.0
	for k, v := range s {
		if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
			t += v
		}
	}
	return t
}

func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 0.03 {
		t.Errorf("%s: share %.3f, want %.3f", what, got, want)
	}
}

func TestPriorityFailover(t *testing.T) {
	p0, p1 := named("p0-", 3), named("p1-", 3)
	b, err := NewPriority([]Level{{Localities: []Locality{{Endpoints: p0}}}, {Localities: []Locality{{Endpoints: p1}}}}, PriorityOptions{Policy: RoundRobin})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20000
	near(t, "all healthy: P0", sumPrefix(shares(b, n), "p0-"), 1)

	// 2/3 healthy: 66.7% x 1.4 = 93.3% stays in P0, the rest spills.
	p0[0].SetHealthy(false)
	time.Sleep(2 * refreshInterval)
	s := shares(b, n)
	near(t, "P0 at 2/3", sumPrefix(s, "p0-"), 0.933)
	near(t, "P1 at P0 2/3", sumPrefix(s, "p1-"), 0.067)
	if s["p0-0:80"] != 0 {
		t.Errorf("an unhealthy P0 host got %.3f of the picks while the levels together are healthy enough", s["p0-0:80"])
	}

	// 1/3 healthy: 46.7% in P0, and P0 does not panic (P1 takes the rest).
	p0[1].SetHealthy(false)
	time.Sleep(2 * refreshInterval)
	s = shares(b, n)
	near(t, "P0 at 1/3", sumPrefix(s, "p0-"), 0.467)
	if s["p0-0:80"]+s["p0-1:80"] != 0 {
		t.Errorf("P0's unhealthy hosts got picks (%.3f): P0 must not panic while P1 has room", s["p0-0:80"]+s["p0-1:80"])
	}

	// P0 down, P1 at 1/3: all to P1, which is below the panic threshold
	// while the levels together are short, so it spreads over all its hosts.
	p0[2].SetHealthy(false)
	p1[0].SetHealthy(false)
	p1[1].SetHealthy(false)
	time.Sleep(2 * refreshInterval)
	s = shares(b, n)
	near(t, "P0 down", sumPrefix(s, "p0-"), 0)
	for _, h := range p1 {
		near(t, "P1 in panic: "+h.Address, s[h.Address], 1.0/3)
	}

	// Everything down: total panic, load by host count.
	p1[2].SetHealthy(false)
	time.Sleep(2 * refreshInterval)
	s = shares(b, n)
	near(t, "total panic P0", sumPrefix(s, "p0-"), 0.5)

	// Recovery: P0 healthy again takes everything back.
	for _, h := range p0 {
		h.SetHealthy(true)
	}
	time.Sleep(2 * refreshInterval)
	near(t, "recovered", sumPrefix(shares(b, n), "p0-"), 1)
}

// TestPriorityNoticesWithoutClock: with every host up the layer never reads
// the clock; a host going bad is still noticed through its level's view.
func TestPriorityNoticesWithoutClock(t *testing.T) {
	p0, p1 := named("p0-", 2), named("p1-", 2)
	b, err := NewPriority([]Level{{Localities: []Locality{{Endpoints: p0}}}, {Localities: []Locality{{Endpoints: p1}}}}, PriorityOptions{Policy: LeastRequest})
	if err != nil {
		t.Fatal(err)
	}
	if st := b.(*priority).cur.Load(); st.next.Load() != never {
		t.Fatal("an all-healthy layer schedules a re-check")
	}
	p0[0].SetHealthy(false)
	p0[1].SetHealthy(false)
	near(t, "P0 down, noticed by picks", sumPrefix(shares(b, 20000), "p1-"), 1)
}

func TestPriorityPanicThresholdZero(t *testing.T) {
	zero := 0.0
	p0 := named("p0-", 4)
	b, err := NewPriority([]Level{{Localities: []Locality{{Endpoints: p0}}}}, PriorityOptions{Policy: Random, PanicThreshold: &zero})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range p0[:3] {
		h.SetHealthy(false)
	}
	time.Sleep(2 * refreshInterval)
	near(t, "no panic: the one healthy host", shares(b, 5000)["p0-3:80"], 1)

	half := 50.0
	b2, _ := NewPriority([]Level{{Localities: []Locality{{Endpoints: p0}}}}, PriorityOptions{Policy: Random, PanicThreshold: &half})
	near(t, "panic at 50%: spread", shares(b2, 20000)["p0-3:80"], 0.25)

	bad := 120.0
	if _, err := NewPriority(nil, PriorityOptions{PanicThreshold: &bad}); err == nil {
		t.Error("panic threshold 120% accepted")
	}
}

func TestLocalityWeighted(t *testing.T) {
	a, z := named("a-", 2), named("z-", 2)
	b, err := NewPriority([]Level{{Localities: []Locality{{Name: "a", Weight: 1, Endpoints: a}, {Name: "z", Weight: 3, Endpoints: z}}}},
		PriorityOptions{Policy: RoundRobin, LocalityWeighted: true})
	if err != nil {
		t.Fatal(err)
	}
	near(t, "locality a by weight", sumPrefix(shares(b, 20000), "a-"), 0.25)
	// z at half its hosts: effective weight 3 x min(1, 1.4 x 0.5) = 2.1.
	z[0].SetHealthy(false)
	time.Sleep(2 * refreshInterval)
	s := shares(b, 20000)
	near(t, "locality a when z degrades", sumPrefix(s, "a-"), 1/3.1)
	if s["z-0:80"] != 0 {
		t.Errorf("the unhealthy host of z got %.3f", s["z-0:80"])
	}
}

func BenchmarkPriorityPick(b *testing.B) {
	lb, _ := NewPriority([]Level{{Localities: []Locality{{Endpoints: named("p0-", 8)}}}, {Localities: []Locality{{Endpoints: named("p1-", 8)}}}},
		PriorityOptions{Policy: RoundRobin})
	b.ReportAllocs()
	for b.Loop() {
		lb.Pick(nil)
	}
}
