package rollout

import (
	"fmt"
	"strings"
	"time"
)

// Gates are the checks a step must pass, on the load the proxies report
// (LRS) during the step, canary against stable, over a sliding window.
// A failing gate rolls the change back at once; a step whose pause ended
// moves on only with a passing verdict. A zero Gates checks nothing.
type Gates struct {
	// Window is the observation window (default DefaultWindow).
	Window time.Duration `json:"window,omitempty"`
	// MinRequests is how many canary requests the window must hold before
	// any verdict (default DefaultMinRequests); the ratio gates also need
	// as many stable requests, and are skipped without them.
	MinRequests uint64 `json:"min_requests,omitempty"`
	// MaxErrorRate fails the canary above this error rate (0..1).
	MaxErrorRate float64 `json:"max_error_rate,omitempty"`
	// MaxErrorRatio fails it when its error rate exceeds the stable one's
	// by this factor (the stable rate counted as at least 0.1 %).
	MaxErrorRatio float64 `json:"max_error_ratio,omitempty"`
	// MaxP99 fails it when its p99 latency exceeds this.
	MaxP99 time.Duration `json:"max_p99,omitempty"`
	// MaxP99Ratio fails it when its p99 exceeds the stable p99 by this
	// factor (the stable p99 counted as at least 1 ms).
	MaxP99Ratio float64 `json:"max_p99_ratio,omitempty"`
}

// Gate defaults.
const (
	DefaultWindow      = 10 * time.Second
	DefaultMinRequests = 100
	// MaxWindow bounds the window (MeshKit keeps the reports this long).
	MaxWindow      = 5 * time.Minute
	errorRateFloor = 0.001
	p99Floor       = time.Millisecond
)

// Enabled reports whether any gate is set.
func (g Gates) Enabled() bool {
	return g.MaxErrorRate > 0 || g.MaxErrorRatio > 0 || g.MaxP99 > 0 || g.MaxP99Ratio > 0
}

// Effective fills the defaults in.
func (g Gates) Effective() Gates {
	if g.Window == 0 {
		g.Window = DefaultWindow
	}
	if g.MinRequests == 0 {
		g.MinRequests = DefaultMinRequests
	}
	return g
}

// Validate reports a gate that cannot be checked, naming it.
func (g Gates) Validate() error {
	switch {
	case g.Window < 0 || g.Window > MaxWindow:
		return fmt.Errorf("gates.window: %v is not 0..%v", g.Window, MaxWindow)
	case g.MaxErrorRate < 0 || g.MaxErrorRate > 1:
		return fmt.Errorf("gates.max_error_rate: %v is not a rate (0..1)", g.MaxErrorRate)
	case g.MaxErrorRatio < 0 || (g.MaxErrorRatio > 0 && g.MaxErrorRatio < 1):
		return fmt.Errorf("gates.max_error_ratio: %v: want 1 or more (0: off)", g.MaxErrorRatio)
	case g.MaxP99 < 0:
		return fmt.Errorf("gates.max_p99: %v is negative", g.MaxP99)
	case g.MaxP99Ratio < 0 || (g.MaxP99Ratio > 0 && g.MaxP99Ratio < 1):
		return fmt.Errorf("gates.max_p99_ratio: %v: want 1 or more (0: off)", g.MaxP99Ratio)
	}
	return nil
}

// Figures are one side's load in a window.
type Figures struct {
	Requests  uint64        `json:"requests"`
	Errors    uint64        `json:"errors"`
	ErrorRate float64       `json:"error_rate"`
	P99       time.Duration `json:"p99,omitempty"`
	// HasP99: the side reported latencies (OmniRelay proxies do, Envoy
	// does not).
	HasP99 bool `json:"has_p99,omitempty"`
}

// Verdict is what the gates said of a window.
type Verdict struct {
	At     time.Time `json:"at"`
	Canary Figures   `json:"canary"`
	Stable Figures   `json:"stable"`
	// Ready: the window held MinRequests canary requests.
	Ready bool `json:"ready"`
	// Failed names the gates that failed, with their values; empty when
	// every gate checked passed.
	Failed []string `json:"failed,omitempty"`
	// Skipped names the gates that could not be checked (no stable
	// traffic, no latencies).
	Skipped []string `json:"skipped,omitempty"`
}

// Pass reports a ready verdict with no failed gate.
func (v *Verdict) Pass() bool { return v != nil && v.Ready && len(v.Failed) == 0 }

// String is the verdict in one line.
func (v *Verdict) String() string {
	s := fmt.Sprintf("canary %d req %.2f%% err", v.Canary.Requests, 100*v.Canary.ErrorRate)
	if v.Canary.HasP99 {
		s += fmt.Sprintf(" p99 %v", v.Canary.P99.Round(time.Millisecond))
	}
	s += fmt.Sprintf("; stable %d req %.2f%% err", v.Stable.Requests, 100*v.Stable.ErrorRate)
	if v.Stable.HasP99 {
		s += fmt.Sprintf(" p99 %v", v.Stable.P99.Round(time.Millisecond))
	}
	switch {
	case !v.Ready:
		s += "; waiting for requests"
	case len(v.Failed) > 0:
		s += "; FAILED: " + strings.Join(v.Failed, ", ")
	default:
		s += "; pass"
	}
	return s
}

// Judge checks the gates on a window's figures.
func (g Gates) Judge(now time.Time, canary, stable Figures) Verdict {
	g = g.Effective()
	v := Verdict{At: now, Canary: canary, Stable: stable, Ready: canary.Requests >= g.MinRequests}
	if !v.Ready {
		return v
	}
	stableReady := stable.Requests >= g.MinRequests
	if g.MaxErrorRate > 0 && canary.ErrorRate > g.MaxErrorRate {
		v.Failed = append(v.Failed, fmt.Sprintf("error rate %.2f%% > %.2f%%", 100*canary.ErrorRate, 100*g.MaxErrorRate))
	}
	if g.MaxErrorRatio > 0 {
		if !stableReady {
			v.Skipped = append(v.Skipped, "error ratio (too few stable requests)")
		} else if r := canary.ErrorRate / max(stable.ErrorRate, errorRateFloor); r > g.MaxErrorRatio {
			v.Failed = append(v.Failed, fmt.Sprintf("error rate %.2f%% is %.1fx the stable %.2f%% (> %.1fx)", 100*canary.ErrorRate, r, 100*stable.ErrorRate, g.MaxErrorRatio))
		}
	}
	if g.MaxP99 > 0 {
		if !canary.HasP99 {
			v.Skipped = append(v.Skipped, "p99 (no latencies reported)")
		} else if canary.P99 > g.MaxP99 {
			v.Failed = append(v.Failed, fmt.Sprintf("p99 %v > %v", canary.P99.Round(time.Millisecond), g.MaxP99))
		}
	}
	if g.MaxP99Ratio > 0 {
		if !canary.HasP99 || !stable.HasP99 || !stableReady {
			v.Skipped = append(v.Skipped, "p99 ratio (no stable latencies)")
		} else if r := float64(canary.P99) / float64(max(stable.P99, p99Floor)); r > g.MaxP99Ratio {
			v.Failed = append(v.Failed, fmt.Sprintf("p99 %v is %.1fx the stable %v (> %.1fx)", canary.P99.Round(time.Millisecond), r, stable.P99.Round(time.Millisecond), g.MaxP99Ratio))
		}
	}
	return v
}
