package rollout

import (
	"strings"
	"testing"
	"time"
)

func TestJudge(t *testing.T) {
	now := time.Now()
	ok := Figures{Requests: 1000, Errors: 1, ErrorRate: 0.001, P99: 10 * time.Millisecond, HasP99: true}
	tests := []struct {
		name           string
		gates          Gates
		canary, stable Figures
		ready, pass    bool
		failed         string
		skipped        string
	}{
		{name: "too few requests", gates: Gates{MaxErrorRate: 0.01}, canary: Figures{Requests: 99}, stable: ok},
		{name: "pass", gates: Gates{MaxErrorRate: 0.01, MaxErrorRatio: 2, MaxP99: 50 * time.Millisecond, MaxP99Ratio: 2}, canary: ok, stable: ok, ready: true, pass: true},
		{name: "absolute error rate", gates: Gates{MaxErrorRate: 0.01}, canary: Figures{Requests: 200, Errors: 4, ErrorRate: 0.02}, stable: ok, ready: true, failed: "error rate 2.00% > 1.00%"},
		{name: "error ratio", gates: Gates{MaxErrorRatio: 2}, canary: Figures{Requests: 200, Errors: 1, ErrorRate: 0.005}, stable: ok, ready: true, failed: "is 5.0x the stable"},
		{name: "error ratio floor", gates: Gates{MaxErrorRatio: 2}, canary: Figures{Requests: 1000, Errors: 1, ErrorRate: 0.001}, stable: Figures{Requests: 1000}, ready: true, pass: true},
		{name: "error ratio without stable traffic", gates: Gates{MaxErrorRatio: 2}, canary: Figures{Requests: 200, ErrorRate: 0.5}, ready: true, pass: true, skipped: "error ratio"},
		{name: "absolute p99", gates: Gates{MaxP99: 100 * time.Millisecond}, canary: Figures{Requests: 200, P99: 210 * time.Millisecond, HasP99: true}, stable: ok, ready: true, failed: "p99 210ms > 100ms"},
		{name: "p99 ratio", gates: Gates{MaxP99Ratio: 2}, canary: Figures{Requests: 200, P99: 30 * time.Millisecond, HasP99: true}, stable: ok, ready: true, failed: "3.0x the stable 10ms"},
		{name: "p99 without latencies (Envoy)", gates: Gates{MaxP99: time.Millisecond}, canary: Figures{Requests: 200}, stable: ok, ready: true, pass: true, skipped: "p99 (no latencies"},
		{name: "min requests", gates: Gates{MaxErrorRate: 0.01, MinRequests: 5}, canary: Figures{Requests: 5}, ready: true, pass: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.gates.Judge(now, tc.canary, tc.stable)
			if v.Ready != tc.ready || v.Pass() != tc.pass {
				t.Fatalf("verdict %+v: ready %v pass %v, want %v %v", v, v.Ready, v.Pass(), tc.ready, tc.pass)
			}
			if got := strings.Join(v.Failed, "; "); !strings.Contains(got, tc.failed) || (tc.failed == "" && got != "") {
				t.Fatalf("failed %q, want %q", got, tc.failed)
			}
			if got := strings.Join(v.Skipped, "; "); !strings.Contains(got, tc.skipped) {
				t.Fatalf("skipped %q, want %q", got, tc.skipped)
			}
		})
	}
}

func TestGatesValidate(t *testing.T) {
	for _, bad := range []Gates{{Window: -1}, {Window: time.Hour}, {MaxErrorRate: 1.5}, {MaxErrorRatio: 0.5}, {MaxP99: -1}, {MaxP99Ratio: 0.9}} {
		if err := bad.Validate(); err == nil {
			t.Fatalf("%+v accepted", bad)
		}
	}
	if err := (Gates{Window: time.Minute, MaxErrorRate: 0.1, MaxErrorRatio: 1, MaxP99: time.Second, MaxP99Ratio: 2}).Validate(); err != nil {
		t.Fatal(err)
	}
	if (Gates{Window: time.Second, MinRequests: 3}).Enabled() {
		t.Fatal("a window alone enables the gates")
	}
}
