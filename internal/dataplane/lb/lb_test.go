package lb

import (
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

var allPolicies = []Policy{RoundRobin, LeastRequest, Random, RingHash, Maglev}

func hosts(weights ...uint32) []*endpoint.Endpoint {
	eps := make([]*endpoint.Endpoint, len(weights))
	for i, w := range weights {
		eps[i] = endpoint.New(fmt.Sprintf("10.0.0.%d:80", i+1), w)
	}
	return eps
}

func equalHosts(n int) []*endpoint.Endpoint {
	w := make([]uint32, n)
	for i := range w {
		w[i] = 1
	}
	return hosts(w...)
}

func mustNew(t testing.TB, p Policy, eps []*endpoint.Endpoint) Balancer {
	t.Helper()
	b, err := New(p, eps, Options{})
	if err != nil {
		t.Fatalf("New(%v): %v", p, err)
	}
	return b
}

// count picks n times, each with a fresh hash so hashing policies spread.
func count(b Balancer, n int) map[*endpoint.Endpoint]int {
	got := map[*endpoint.Endpoint]int{}
	for i := range n {
		c := Context{Hash: HashBytes(fmt.Appendf(nil, "key-%d", i)), HasHash: true}
		got[b.Pick(&c)]++
	}
	return got
}

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Policy
		wantErr bool
	}{
		{name: "round robin", in: "round_robin", want: RoundRobin},
		{name: "envoy enum", in: "LEAST_REQUEST", want: LeastRequest},
		{name: "random", in: "random", want: Random},
		{name: "ring hash", in: "ring_hash", want: RingHash},
		{name: "maglev extension", in: "envoy.load_balancing_policies.maglev", want: Maglev},
		{name: "unknown", in: "weighted_target", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "mixed case is not a name", in: "Round_Robin", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePolicy(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParsePolicy(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Fatalf("ParsePolicy(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestNewOptions(t *testing.T) {
	tests := []struct {
		name    string
		policy  Policy
		eps     int
		opts    Options
		wantErr bool
	}{
		{name: "defaults", policy: Maglev, eps: 3},
		{name: "maglev table not prime", policy: Maglev, eps: 3, opts: Options{MaglevTableSize: 65536}, wantErr: true},
		{name: "maglev small prime", policy: Maglev, eps: 3, opts: Options{MaglevTableSize: 7}},
		{name: "maglev more hosts than slots", policy: Maglev, eps: 8, opts: Options{MaglevTableSize: 7}, wantErr: true},
		{name: "maglev table too large", policy: Maglev, eps: 3, opts: Options{MaglevTableSize: 5000101}, wantErr: true},
		{name: "ring min above max", policy: RingHash, eps: 3, opts: Options{MinRingSize: 4096, MaxRingSize: 1024}, wantErr: true},
		{name: "ring max too large", policy: RingHash, eps: 3, opts: Options{MaxRingSize: 1 << 24}, wantErr: true},
		{name: "choice count one", policy: LeastRequest, eps: 3, opts: Options{ChoiceCount: 1}, wantErr: true},
		{name: "choice count five", policy: LeastRequest, eps: 3, opts: Options{ChoiceCount: 5}},
		{name: "unknown policy", policy: Policy(42), eps: 3, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.policy, equalHosts(tt.eps), tt.opts)
			if (err != nil) != tt.wantErr {
				t.Fatalf("New error = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

func TestEmptyPicksNil(t *testing.T) {
	for _, p := range allPolicies {
		t.Run(p.String(), func(t *testing.T) {
			b := mustNew(t, p, nil)
			if e := b.Pick(&Context{Hash: 1, HasHash: true}); e != nil {
				t.Fatalf("Pick on empty = %v, want nil", e.Address)
			}
		})
	}
}

func TestSingleHost(t *testing.T) {
	for _, p := range allPolicies {
		t.Run(p.String(), func(t *testing.T) {
			eps := hosts(3)
			b := mustNew(t, p, eps)
			if e := b.Pick(nil); e != eps[0] {
				t.Fatalf("Pick = %v", e)
			}
			// Its only host down is below the panic threshold: still picked.
			eps[0].SetHealthy(false)
			if e := b.Pick(nil); e != eps[0] {
				t.Fatalf("Pick with only host unhealthy = %v", e)
			}
		})
	}
}

func TestRoundRobinExactCycle(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
	}{
		{name: "equal", weights: []uint32{1, 1, 1, 1}},
		{name: "weighted", weights: []uint32{1, 2, 3, 4}},
		{name: "common factor", weights: []uint32{10, 20, 30}},
		{name: "skewed", weights: []uint32{1, 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps := hosts(tt.weights...)
			b := mustNew(t, RoundRobin, eps)
			var sum, g uint64
			for _, w := range tt.weights {
				g = gcd(g, uint64(w))
			}
			for _, w := range tt.weights {
				sum += uint64(w) / g
			}
			const cycles = 7
			got := count(b, int(sum)*cycles)
			for i, e := range eps {
				if want := int(uint64(tt.weights[i])/g) * cycles; got[e] != want {
					t.Errorf("host %d (weight %d): %d picks, want %d", i, tt.weights[i], got[e], want)
				}
			}
		})
	}
}

func TestRoundRobinSpreadsHeavyHost(t *testing.T) {
	// EDF interleaving spreads a heavy host's picks: with weights 3:1 the
	// heavy host never gets more than 3 picks in a row, even across views.
	eps := hosts(3, 1)
	b := mustNew(t, RoundRobin, eps)
	run := 0
	for range 400 {
		if b.Pick(nil) == eps[0] {
			run++
			if run > 3 {
				t.Fatal("heavy host picked more than 3 times in a row")
			}
		} else {
			run = 0
		}
	}
}

func TestWeightedSequenceCap(t *testing.T) {
	eps := hosts(1_000_000, 999_999, 7)
	seq := weightedSequence(eps)
	if len(seq) > maxWeightedSequence+len(eps) {
		t.Fatalf("sequence length %d above cap", len(seq))
	}
	n := [3]int{}
	for _, i := range seq {
		n[i]++
	}
	if n[2] < 1 {
		t.Fatal("light host lost its slot when scaling")
	}
	if r := float64(n[0]) / float64(n[1]); math.Abs(r-1) > 0.01 {
		t.Fatalf("ratio of heavy hosts %.3f, want ~1", r)
	}
}

// within checks counts against weights with a tolerance of 5 standard
// deviations of the binomial, so the test is not flaky yet catches a
// policy that ignores weights.
func within(t *testing.T, eps []*endpoint.Endpoint, got map[*endpoint.Endpoint]int, n int) {
	t.Helper()
	var total float64
	for _, e := range eps {
		total += float64(e.Weight)
	}
	for i, e := range eps {
		p := float64(e.Weight) / total
		want := p * float64(n)
		sd := math.Sqrt(float64(n) * p * (1 - p))
		if math.Abs(float64(got[e])-want) > 5*sd+1 {
			t.Errorf("host %d (weight %d): %d picks, want %.0f±%.0f", i, e.Weight, got[e], want, 5*sd)
		}
	}
}

func TestWeightedDistribution(t *testing.T) {
	tests := []struct {
		name    string
		policy  Policy
		weights []uint32
	}{
		{name: "random equal", policy: Random, weights: []uint32{1, 1, 1, 1, 1}},
		{name: "random weighted", policy: Random, weights: []uint32{1, 2, 3, 10}},
		{name: "least request idle weighted", policy: LeastRequest, weights: []uint32{1, 2, 3, 10}},
		{name: "least request idle equal", policy: LeastRequest, weights: []uint32{5, 5, 5}},
		{name: "ring hash weighted", policy: RingHash, weights: []uint32{1, 2, 3, 10}},
		{name: "maglev weighted", policy: Maglev, weights: []uint32{1, 2, 3, 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps := hosts(tt.weights...)
			// A large ring keeps the arc-length noise of ring_hash (about
			// 1/sqrt(points per host)) well under the tolerance.
			b, err := New(tt.policy, eps, Options{MinRingSize: 1 << 16})
			if err != nil {
				t.Fatal(err)
			}
			const n = 100_000
			got := count(b, n)
			if tt.policy == RingHash || tt.policy == Maglev {
				// Hash placement is not exact: allow 5% relative error.
				var total float64
				for _, e := range eps {
					total += float64(e.Weight)
				}
				for i, e := range eps {
					want := float64(e.Weight) / total * n
					if math.Abs(float64(got[e])-want) > 0.05*want {
						t.Errorf("host %d (weight %d): %d picks, want %.0f±5%%", i, e.Weight, got[e], want)
					}
				}
				return
			}
			within(t, eps, got, n)
		})
	}
}

func TestLeastRequestPrefersIdle(t *testing.T) {
	tests := []struct {
		name     string
		weights  []uint32
		active   []int64
		choices  int
		idle     int     // index of the host expected to win most
		minShare float64 // its share must be at least this
	}{
		// P2C over 4 hosts, 3 busy: the idle host wins unless both samples
		// are busy: 1-(3/4)^2 = 43.75% instead of 25%.
		{name: "p2c one idle of four", weights: []uint32{1, 1, 1, 1}, active: []int64{5, 5, 0, 5}, choices: 2, idle: 2, minShare: 0.40},
		{name: "more choices", weights: []uint32{1, 1, 1, 1}, active: []int64{5, 5, 0, 5}, choices: 8, idle: 2, minShare: 0.85},
		// Weighted: 4 in flight on weight 4 is as loaded as 1 on weight 1;
		// the weight-4 host with 2 in flight is the least loaded.
		{name: "weighted by load per weight", weights: []uint32{1, 4}, active: []int64{1, 2}, choices: 2, idle: 1, minShare: 0.95},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps := hosts(tt.weights...)
			for i, a := range tt.active {
				eps[i].Active.Store(a)
			}
			b, err := New(LeastRequest, eps, Options{ChoiceCount: tt.choices})
			if err != nil {
				t.Fatal(err)
			}
			const n = 20_000
			got := count(b, n)
			if share := float64(got[eps[tt.idle]]) / n; share < tt.minShare {
				t.Fatalf("idle host share %.3f, want >= %.2f (counts %v)", share, tt.minShare, got)
			}
		})
	}
}

func TestSkipsUnavailable(t *testing.T) {
	tests := []struct {
		name string
		down func(e *endpoint.Endpoint)
	}{
		{name: "unhealthy", down: func(e *endpoint.Endpoint) { e.SetHealthy(false) }},
		{name: "ejected", down: func(e *endpoint.Endpoint) { e.Eject(time.Now().Add(time.Hour)) }},
	}
	for _, p := range allPolicies {
		for _, tt := range tests {
			t.Run(p.String()+"/"+tt.name, func(t *testing.T) {
				eps := hosts(1, 2, 1, 3, 1)
				b := mustNew(t, p, eps)
				count(b, 100) // views built while all are up
				tt.down(eps[1])
				tt.down(eps[3])
				got := count(b, 5000)
				if got[eps[1]] != 0 || got[eps[3]] != 0 {
					t.Fatalf("unavailable hosts picked: %d, %d", got[eps[1]], got[eps[3]])
				}
				for _, i := range []int{0, 2, 4} {
					if got[eps[i]] == 0 {
						t.Errorf("available host %d never picked", i)
					}
				}
			})
		}
	}
}

func TestPanicMode(t *testing.T) {
	for _, p := range allPolicies {
		t.Run(p.String(), func(t *testing.T) {
			eps := equalHosts(4)
			b := mustNew(t, p, eps)
			count(b, 10)
			// 2 of 4 available is 50%: not panic.
			eps[0].SetHealthy(false)
			eps[1].SetHealthy(false)
			got := count(b, 2000)
			if got[eps[0]]+got[eps[1]] != 0 {
				t.Fatalf("at 50%% available, unavailable hosts were picked: %v", got)
			}
			// 1 of 4 (25%) is below the threshold: spread over all.
			eps[2].Eject(time.Now().Add(time.Hour))
			got = count(b, 4000)
			for i, e := range eps {
				if got[e] < 400 {
					t.Errorf("panic mode: host %d got %d of 4000 picks, want about 1000", i, got[e])
				}
			}
		})
	}
}

func TestHostRecovers(t *testing.T) {
	tests := []struct {
		name    string
		down    func(e *endpoint.Endpoint)
		recover func(e *endpoint.Endpoint)
	}{
		{name: "health restored", down: func(e *endpoint.Endpoint) { e.SetHealthy(false) }, recover: func(e *endpoint.Endpoint) { e.SetHealthy(true) }},
		{name: "ejection expires", down: func(e *endpoint.Endpoint) { e.Eject(time.Now().Add(30 * time.Millisecond)) }, recover: func(*endpoint.Endpoint) {}},
	}
	for _, p := range []Policy{RoundRobin, LeastRequest, Random} {
		for _, tt := range tests {
			t.Run(p.String()+"/"+tt.name, func(t *testing.T) {
				eps := equalHosts(3)
				b := mustNew(t, p, eps)
				tt.down(eps[0])
				for range 50 {
					if b.Pick(nil) == eps[0] {
						t.Fatal("down host picked")
					}
				}
				tt.recover(eps[0])
				testutil.Eventually(t, 2*time.Second, time.Millisecond, "recovered host picked", func() (bool, string) {
					return b.Pick(nil) == eps[0], "another host picked"
				})
			})
		}
	}
}

func keys(n int) []Context {
	cs := make([]Context, n)
	for i := range cs {
		cs[i] = Context{Hash: HashBytes(fmt.Appendf(nil, "session-%d", i)), HasHash: true}
	}
	return cs
}

func TestConsistentHashing(t *testing.T) {
	tests := []struct {
		name   string
		policy Policy
		hosts  int
		// churn bounds the fraction of all keys that move between surviving
		// hosts when one host is removed. Envoy's ring layout rescales the
		// points per host to keep the ring near minimum_ring_size, so with
		// 10 hosts each survivor goes from 103 to 114 points and steals
		// about 5% of keys from the others; with 100 hosts both sizes round
		// to 11 points and only the removed host's keys move. Maglev's
		// paper bound is a few percent.
		churn float64
	}{
		{name: "ring hash 10 hosts", policy: RingHash, hosts: 10, churn: 0.07},
		{name: "ring hash 100 hosts", policy: RingHash, hosts: 100, churn: 0},
		{name: "maglev 10 hosts", policy: Maglev, hosts: 10, churn: 0.03},
		{name: "maglev 100 hosts", policy: Maglev, hosts: 100, churn: 0.03},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, n := tt.policy, tt.hosts
			eps := equalHosts(n)
			b := mustNew(t, p, eps)
			ks := keys(20_000)
			before := make([]*endpoint.Endpoint, len(ks))
			for i := range ks {
				before[i] = b.Pick(&ks[i])
				if again := b.Pick(&ks[i]); again != before[i] {
					t.Fatalf("key %d: %s then %s", i, before[i].Address, again.Address)
				}
			}

			// The same hosts in another order build the same mapping.
			rev := make([]*endpoint.Endpoint, n)
			for i := range eps {
				rev[n-1-i] = eps[i]
			}
			br := mustNew(t, p, rev)
			for i := range ks {
				if e := br.Pick(&ks[i]); e != before[i] && p == Maglev {
					t.Fatalf("key %d moved when only host order changed", i)
				}
			}

			// Remove host 3: its keys (about 1/n) move, others (nearly) stay.
			removed := eps[3]
			rest := append(append([]*endpoint.Endpoint{}, eps[:3]...), eps[4:]...)
			b2 := mustNew(t, p, rest)
			moved, movedOthers := 0, 0
			for i := range ks {
				after := b2.Pick(&ks[i])
				if after == removed {
					t.Fatal("removed host picked")
				}
				if after != before[i] {
					moved++
					if before[i] != removed {
						movedOthers++
					}
				}
			}
			own := float64(moved-movedOthers) / float64(len(ks))
			if own < 0.5/float64(n) || own > 1.5/float64(n) {
				t.Errorf("removed host held %.3f of keys, want ~%.3f", own, 1.0/float64(n))
			}
			if f := float64(movedOthers) / float64(len(ks)); f > tt.churn {
				t.Errorf("%.4f of keys moved between surviving hosts, want <= %.2f", f, tt.churn)
			}

			// Marking the host unavailable instead of removing it moves only
			// its keys.
			eps[3].SetHealthy(false)
			for i := range ks {
				e := b.Pick(&ks[i])
				if e == removed {
					t.Fatal("unhealthy host picked")
				}
				if before[i] != removed && e != before[i] {
					t.Fatalf("key %d on healthy host %s moved to %s", i, before[i].Address, e.Address)
				}
			}
		})
	}
}

func TestRingSize(t *testing.T) {
	tests := []struct {
		name      string
		weights   []uint32
		opts      Options
		wantSize  int
		wantRatio float64 // points of host 1 / points of host 0
	}{
		{name: "default min", weights: []uint32{1, 1, 1, 1}, wantSize: 1024, wantRatio: 1},
		{name: "weighted", weights: []uint32{1, 3}, opts: Options{MinRingSize: 1000}, wantSize: 1000, wantRatio: 3},
		// The lightest host gets ceil(1024/1001) = 2 points: the ring grows
		// past the minimum to keep weights exact.
		{name: "light host rounds up", weights: []uint32{1, 1000}, wantSize: 2002, wantRatio: 1000},
		{name: "capped", weights: []uint32{1, 1000}, opts: Options{MinRingSize: 10_000, MaxRingSize: 10_000}, wantSize: 10_000, wantRatio: 999},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(RingHash, hosts(tt.weights...), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			r := b.(*ringHash)
			if len(r.hashes) != tt.wantSize {
				t.Errorf("ring size %d, want %d", len(r.hashes), tt.wantSize)
			}
			n := make([]float64, len(tt.weights))
			for _, h := range r.hosts {
				n[h]++
			}
			if got := n[1] / n[0]; math.Abs(got-tt.wantRatio)/tt.wantRatio > 0.1 {
				t.Errorf("points ratio %.2f, want %.2f", got, tt.wantRatio)
			}
		})
	}
}

func TestMaglevTableWeights(t *testing.T) {
	eps := hosts(1, 2, 5)
	b, err := New(Maglev, eps, Options{MaglevTableSize: 65537})
	if err != nil {
		t.Fatal(err)
	}
	var n [3]float64
	for _, h := range b.(*maglev).table {
		n[h]++
	}
	for i, want := range []float64{1.0 / 8, 2.0 / 8, 5.0 / 8} {
		if got := n[i] / 65537; math.Abs(got-want) > 0.01 {
			t.Errorf("host %d owns %.3f of the table, want %.3f", i, got, want)
		}
	}
}

func TestNoHashPicksRandomly(t *testing.T) {
	for _, p := range []Policy{RingHash, Maglev} {
		t.Run(p.String(), func(t *testing.T) {
			eps := equalHosts(4)
			b := mustNew(t, p, eps)
			got := map[*endpoint.Endpoint]int{}
			for range 4000 {
				got[b.Pick(&Context{})]++
			}
			for i, e := range eps {
				if got[e] < 600 {
					t.Errorf("host %d got %d of 4000 hashless picks", i, got[e])
				}
			}
		})
	}
}

func TestConcurrentPick(t *testing.T) {
	for _, p := range allPolicies {
		t.Run(p.String(), func(t *testing.T) {
			eps := hosts(1, 2, 3, 1, 2, 3, 1, 2)
			b := mustNew(t, p, eps)
			stop := make(chan struct{})
			var flipper sync.WaitGroup
			flipper.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					e := eps[i%len(eps)]
					e.SetHealthy(i%3 != 0)
					if i%5 == 0 {
						e.Eject(time.Now().Add(time.Millisecond))
					}
				}
			})
			var pickers sync.WaitGroup
			for g := range 4 {
				pickers.Go(func() {
					c := Context{HasHash: true}
					for i := range 2000 {
						c.Hash = uint64(g*1_000_003 + i)
						e := b.Pick(&c)
						if e == nil {
							t.Error("nil pick from non-empty balancer")
							return
						}
						e.Active.Add(1)
						e.Active.Add(-1)
					}
				})
			}
			pickers.Wait()
			close(stop)
			flipper.Wait()
		})
	}
}

func BenchmarkPick(b *testing.B) {
	for _, p := range allPolicies {
		for _, n := range []int{10, 100} {
			for _, weighted := range []bool{false, true} {
				name := fmt.Sprintf("%s/hosts=%d", p, n)
				if weighted {
					name += "/weighted"
				}
				b.Run(name, func(b *testing.B) {
					w := make([]uint32, n)
					for i := range w {
						w[i] = 1
						if weighted {
							w[i] = uint32(1 + i%5)
						}
					}
					bal := mustNew(b, p, hosts(w...))
					c := Context{HasHash: true}
					b.ReportAllocs()
					for b.Loop() {
						c.Hash += 0x9e3779b97f4a7c15
						_ = bal.Pick(&c)
					}
				})
			}
		}
	}
}

func BenchmarkPickParallel(b *testing.B) {
	for _, p := range allPolicies {
		b.Run(p.String(), func(b *testing.B) {
			bal := mustNew(b, p, equalHosts(100))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				c := Context{HasHash: true}
				for pb.Next() {
					c.Hash += 0x9e3779b97f4a7c15
					_ = bal.Pick(&c)
				}
			})
		})
	}
}

// BenchmarkPickDegraded measures picks while one host of 100 is down: the
// view then re-checks on a timer, so each pick reads the clock.
func BenchmarkPickDegraded(b *testing.B) {
	for _, p := range allPolicies {
		b.Run(p.String(), func(b *testing.B) {
			eps := equalHosts(100)
			eps[7].SetHealthy(false)
			bal := mustNew(b, p, eps)
			c := Context{HasHash: true}
			b.ReportAllocs()
			for b.Loop() {
				c.Hash += 0x9e3779b97f4a7c15
				_ = bal.Pick(&c)
			}
		})
	}
}
