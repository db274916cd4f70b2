package outlier

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
	"github.com/omnirelay/omnirelay/internal/dataplane/upstream"
)

// fakeClock is a settable clock; tests advance it instead of sleeping.
type fakeClock struct{ ns atomic.Int64 }

func newClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func hosts(n int) []*endpoint.Endpoint {
	eps := make([]*endpoint.Endpoint, n)
	for i := range eps {
		eps[i] = endpoint.New(fmt.Sprintf("10.0.0.%d:80", i+1), 1)
	}
	return eps
}

type ejection struct {
	addr   string
	reason string
}

func newDetector(cfg Config, clk *fakeClock, eps []*endpoint.Endpoint) (*Detector, *[]ejection) {
	d := New(cfg, clk.Now)
	d.Update(eps)
	var mu sync.Mutex
	var log []ejection
	d.OnEject = func(ep *endpoint.Endpoint, reason string) {
		mu.Lock()
		log = append(log, ejection{ep.Address, reason})
		mu.Unlock()
	}
	return d, &log
}

func TestConsecutiveFailures(t *testing.T) {
	tests := []struct {
		name       string
		cfg        Config
		results    []Result
		wantReason string // "" means not ejected
	}{
		{name: "five 5xx eject", results: []Result{500, 503, 500, 599, 500}, wantReason: ReasonConsecutive5xx},
		{name: "four 5xx do not", results: []Result{500, 500, 500, 500}},
		{name: "success resets", results: []Result{500, 500, 500, 500, 200, 500, 500, 500, 500}},
		{name: "4xx is success", results: []Result{500, 500, 404, 500, 500, 500}},
		{name: "local failures count as 5xx", results: []Result{Failed(upstream.FailConnect), Failed(upstream.FailReset), Failed(upstream.FailTimeout), 502, Failed(upstream.FailConnect)}, wantReason: ReasonConsecutive5xx},
		{name: "custom threshold", cfg: Config{Consecutive5xx: 2}, results: []Result{500, 500}, wantReason: ReasonConsecutive5xx},
		{name: "gateway failures off by default", cfg: Config{Consecutive5xx: 10}, results: []Result{502, 503, 504, 502, 503}},
		{name: "gateway failures", cfg: Config{Consecutive5xx: 10, ConsecutiveGatewayFailure: 3}, results: []Result{502, Failed(upstream.FailTimeout), 504}, wantReason: ReasonConsecutiveGatewayFailure},
		{name: "500 breaks gateway run", cfg: Config{Consecutive5xx: 10, ConsecutiveGatewayFailure: 3}, results: []Result{502, 503, 500, 504, 502}},
		{name: "gateway trips first when both reach", cfg: Config{Consecutive5xx: 3, ConsecutiveGatewayFailure: 3}, results: []Result{503, 503, 503}, wantReason: ReasonConsecutiveGatewayFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			eps := hosts(3)
			d, log := newDetector(tt.cfg, clk, eps)
			for _, r := range tt.results {
				d.Report(eps[0], r)
			}
			ejected := eps[0].Ejected(clk.Now())
			if ejected != (tt.wantReason != "") {
				t.Fatalf("ejected = %v, want %v", ejected, tt.wantReason != "")
			}
			if tt.wantReason == "" {
				if len(*log) != 0 {
					t.Fatalf("OnEject called: %v", *log)
				}
				return
			}
			if want := []ejection{{eps[0].Address, tt.wantReason}}; len(*log) != 1 || (*log)[0] != want[0] {
				t.Fatalf("OnEject log %v, want %v", *log, want)
			}
			if got := eps[0].EjectedUntil().Sub(clk.Now()); got != 30*time.Second {
				t.Fatalf("first ejection lasts %v, want the 30s base", got)
			}
		})
	}
}

func TestEjectionExpiresAndGrows(t *testing.T) {
	clk := newClock()
	eps := hosts(2)
	d, _ := newDetector(Config{Consecutive5xx: 1, BaseEjectionTime: 10 * time.Second, MaxEjectionTime: 35 * time.Second, Interval: time.Hour}, clk, eps)
	for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second, 35 * time.Second, 35 * time.Second} {
		d.Report(eps[0], 500)
		if !eps[0].Ejected(clk.Now()) {
			t.Fatalf("ejection %d: not ejected", i+1)
		}
		if got := eps[0].EjectedUntil().Sub(clk.Now()); got != want {
			t.Fatalf("ejection %d lasts %v, want %v", i+1, got, want)
		}
		// Reports while ejected (requests in flight when it tripped) do not
		// extend the ejection.
		d.Report(eps[0], 500)
		if got := eps[0].EjectedUntil().Sub(clk.Now()); got != want {
			t.Fatalf("report while ejected moved the deadline to %v", got)
		}
		clk.Advance(want - time.Nanosecond)
		if !eps[0].Ejected(clk.Now()) {
			t.Fatalf("ejection %d ended early", i+1)
		}
		clk.Advance(time.Nanosecond)
		if eps[0].Ejected(clk.Now()) {
			t.Fatalf("ejection %d did not expire", i+1)
		}
	}
	if got := eps[0].EjectionCount.Load(); got != 5 {
		t.Fatalf("EjectionCount = %d, want 5", got)
	}
}

func TestMultiplierDecays(t *testing.T) {
	clk := newClock()
	eps := hosts(1)
	d, _ := newDetector(Config{Consecutive5xx: 1, BaseEjectionTime: time.Second, Interval: 10 * time.Second}, clk, eps)
	// Ejections of 1s, 2s and 3s, each followed by only 0-2s un-ejected:
	// less than an Interval, so no decay.
	for range 3 {
		d.Report(eps[0], 500)
		clk.Advance(3 * time.Second)
	}
	if got := eps[0].EjectionCount.Load(); got != 3 {
		t.Fatalf("EjectionCount = %d after 3 quick ejections, want 3", got)
	}
	// The third ejection (3s) ended; 25s later, two whole intervals have
	// passed un-ejected: the multiplier drops from 3 to 1, then counts this
	// ejection.
	clk.Advance(25 * time.Second)
	d.Report(eps[0], 500)
	if got := eps[0].EjectionCount.Load(); got != 2 {
		t.Fatalf("EjectionCount = %d, want 2", got)
	}
	if got := eps[0].EjectedUntil().Sub(clk.Now()); got != 2*time.Second {
		t.Fatalf("ejection lasts %v, want 2s", got)
	}
}

func TestMaxEjectionPercent(t *testing.T) {
	tests := []struct {
		name    string
		hosts   int
		percent uint32
		want    int
	}{
		{name: "default 10% of 10", hosts: 10, want: 1},
		{name: "default 10% of 3 still ejects one", hosts: 3, want: 1},
		{name: "20% of 20", hosts: 20, percent: 20, want: 4},
		{name: "50% of 5", hosts: 5, percent: 50, want: 2},
		{name: "100% of 4", hosts: 4, percent: 100, want: 4},
		{name: "above 100 is 100", hosts: 4, percent: 250, want: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			eps := hosts(tt.hosts)
			d, log := newDetector(Config{Consecutive5xx: 1, MaxEjectionPercent: tt.percent}, clk, eps)
			for _, e := range eps {
				d.Report(e, 503)
			}
			n := 0
			for _, e := range eps {
				if e.Ejected(clk.Now()) {
					n++
				}
			}
			if n != tt.want || len(*log) != tt.want {
				t.Fatalf("%d ejected (%d callbacks), want %d", n, len(*log), tt.want)
			}
			// Once the first ejections expire, others may be ejected.
			clk.Advance(31 * time.Second)
			for _, e := range eps {
				d.Report(e, 503)
			}
			if len(*log) != 2*tt.want && tt.want < tt.hosts {
				t.Fatalf("after expiry %d callbacks, want %d", len(*log), 2*tt.want)
			}
		})
	}
}

func TestUpdateCarriesCounters(t *testing.T) {
	clk := newClock()
	eps := hosts(3)
	d, _ := newDetector(Config{MaxEjectionPercent: 100}, clk, eps)
	for range 4 {
		d.Report(eps[0], 500)
		d.Report(eps[1], 500)
	}
	// eps[0] stays as is; eps[1] is replaced by a new Endpoint at the same
	// address (its weight changed); eps[2] is removed.
	moved := endpoint.New(eps[1].Address, 7)
	d.Update([]*endpoint.Endpoint{eps[0], moved})
	d.Report(eps[0], 500)
	d.Report(moved, 500)
	if !eps[0].Ejected(clk.Now()) {
		t.Error("kept host lost its counter")
	}
	if !moved.Ejected(clk.Now()) {
		t.Error("re-created host lost its counter")
	}
	// Removed and unknown hosts are ignored.
	for range 10 {
		d.Report(eps[2], 500)
		d.Report(endpoint.New("192.0.2.1:80", 1), 500)
	}
	if eps[2].Ejected(clk.Now()) {
		t.Error("removed host ejected")
	}
}

func TestConcurrentReport(t *testing.T) {
	clk := newClock()
	eps := hosts(20)
	d, log := newDetector(Config{Consecutive5xx: 3, MaxEjectionPercent: 20}, clk, eps)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 3000 {
				e := eps[(g*7+i)%len(eps)]
				r := Status(500)
				if i%4 == 0 {
					r = 200
				}
				d.Report(e, r)
				if i%500 == 0 {
					d.Update(eps)
				}
			}
		})
	}
	wg.Wait()
	n := 0
	for _, e := range eps {
		if e.Ejected(clk.Now()) {
			n++
		}
	}
	if n > 4 || len(*log) > 4 {
		t.Fatalf("%d hosts ejected (%d callbacks), cap is 20%% of 20 = 4", n, len(*log))
	}
	if n == 0 {
		t.Fatal("nothing ejected")
	}
}

func TestResultString(t *testing.T) {
	tests := []struct {
		name string
		r    Result
		want string
	}{
		{name: "status", r: Status(503), want: "503"},
		{name: "connect", r: Failed(upstream.FailConnect), want: "connect_failure"},
		{name: "reset", r: Failed(upstream.FailReset), want: "reset"},
		{name: "timeout", r: Failed(upstream.FailTimeout), want: "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.String(); got != tt.want {
				t.Fatalf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func BenchmarkReport(b *testing.B) {
	eps := hosts(100)
	d := New(Config{Consecutive5xx: 1 << 30}, time.Now)
	d.Update(eps)
	b.Run("success", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			d.Report(eps[i%100], 200)
			i++
		}
	})
	b.Run("5xx", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			d.Report(eps[i%100], 503)
			i++
		}
	})
	b.Run("parallel mixed", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				r := Status(200)
				if i%8 == 0 {
					r = 503
				}
				d.Report(eps[i%100], r)
				i++
			}
		})
	})
}

func pct(v uint32) *uint32 { return &v }

func TestEnforcingPercentages(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		r    Result
		want bool
	}{
		{"consecutive 5xx enforced at 0% never ejects", Config{EnforcingConsecutive5xx: pct(0)}, 500, false},
		{"consecutive 5xx enforced at 100% ejects", Config{EnforcingConsecutive5xx: pct(100)}, 500, true},
		{"gateway failures enforced at 0% never eject", Config{Consecutive5xx: 1000, ConsecutiveGatewayFailure: 3, EnforcingConsecutiveGatewayFailure: pct(0)}, 503, false},
		{"gateway failures enforced at 100% eject", Config{Consecutive5xx: 1000, ConsecutiveGatewayFailure: 3, EnforcingConsecutiveGatewayFailure: pct(100)}, 503, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			eps := hosts(10)
			d, _ := newDetector(tc.cfg, clk, eps)
			for range 20 {
				d.Report(eps[0], tc.r)
			}
			if got := eps[0].Ejected(clk.Now()); got != tc.want {
				t.Fatalf("ejected = %v, want %v", got, tc.want)
			}
		})
	}
	// 50%: about half of the trips eject.
	ejected := 0
	for range 400 {
		clk := newClock()
		eps := hosts(10)
		d, _ := newDetector(Config{EnforcingConsecutive5xx: pct(50)}, clk, eps)
		for range 5 {
			d.Report(eps[0], 500)
		}
		if eps[0].Ejected(clk.Now()) {
			ejected++
		}
	}
	if ejected < 140 || ejected > 260 {
		t.Fatalf("50%% enforcement ejected %d of 400", ejected)
	}
}

// report sends n results to ep, fails of them failures (503).
func report(d *Detector, ep *endpoint.Endpoint, n, fails int) {
	for i := range n {
		if i < fails {
			d.Report(ep, 503)
		} else {
			d.Report(ep, 200)
		}
	}
}

func TestSuccessRate(t *testing.T) {
	cfg := Config{Consecutive5xx: 1 << 30, SuccessRate: &SuccessRate{Enforcing: 100}, MaxEjectionPercent: 50}
	t.Run("an outlier among six is ejected", func(t *testing.T) {
		clk := newClock()
		eps := hosts(6)
		d, log := newDetector(cfg, clk, eps)
		for _, e := range eps[:5] {
			report(d, e, 200, 2) // 99%
		}
		report(d, eps[5], 200, 100) // 50%
		d.Evaluate()
		if !eps[5].Ejected(clk.Now()) || len(*log) != 1 || (*log)[0].reason != ReasonSuccessRate {
			t.Fatalf("want eps[5] ejected for success_rate, log %v", *log)
		}
		for _, e := range eps[:5] {
			if e.Ejected(clk.Now()) {
				t.Fatalf("%s ejected", e.Address)
			}
		}
		// The next interval starts from zero: nothing more is ejected.
		d.Evaluate()
		if len(*log) != 1 {
			t.Fatalf("a second evaluation with no traffic ejected: %v", *log)
		}
	})
	t.Run("too few hosts with enough volume: nothing", func(t *testing.T) {
		clk := newClock()
		eps := hosts(6)
		d, log := newDetector(cfg, clk, eps)
		for _, e := range eps[:3] {
			report(d, e, 200, 0)
		}
		report(d, eps[3], 99, 0) // below the request volume
		report(d, eps[5], 200, 190)
		d.Evaluate()
		if len(*log) != 0 {
			t.Fatalf("ejected with 4 hosts over the volume (minimum 5): %v", *log)
		}
	})
	t.Run("uniform rates: nothing", func(t *testing.T) {
		clk := newClock()
		eps := hosts(6)
		d, log := newDetector(cfg, clk, eps)
		for _, e := range eps {
			report(d, e, 200, 20)
		}
		d.Evaluate()
		if len(*log) != 0 {
			t.Fatalf("ejected among equal hosts: %v", *log)
		}
	})
}

func TestFailurePercentage(t *testing.T) {
	clk := newClock()
	eps := hosts(5)
	d, log := newDetector(Config{Consecutive5xx: 1 << 30, FailurePercentage: &FailurePercentage{Enforcing: 100}, MaxEjectionPercent: 100}, clk, eps)
	report(d, eps[0], 100, 90) // 90% >= 85%
	report(d, eps[1], 100, 80)
	for _, e := range eps[2:] {
		report(d, e, 100, 0)
	}
	d.Evaluate()
	if !eps[0].Ejected(clk.Now()) || eps[1].Ejected(clk.Now()) || len(*log) != 1 || (*log)[0].reason != ReasonFailurePercentage {
		t.Fatalf("want only eps[0] ejected for failure_percentage: %v", *log)
	}
}

func TestIntervalRuns(t *testing.T) {
	eps := hosts(5)
	d := New(Config{Consecutive5xx: 1 << 30, Interval: 100 * time.Millisecond, MaxEjectionPercent: 100,
		FailurePercentage: &FailurePercentage{Enforcing: 100, RequestVolume: 10}}, time.Now)
	d.Update(eps)
	ejected := make(chan string, 8)
	d.OnEject = func(ep *endpoint.Endpoint, reason string) { ejected <- ep.Address + " " + reason }
	d.Start()
	defer d.Stop()
	for _, e := range eps[1:] {
		report(d, e, 20, 0)
	}
	report(d, eps[0], 20, 20)
	select {
	case got := <-ejected:
		if got != eps[0].Address+" "+ReasonFailurePercentage {
			t.Fatalf("ejected %s", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the interval evaluation never ran")
	}
}
