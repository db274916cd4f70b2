package rollout

import (
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/controlplane/versions"
)

func TestPlanValidate(t *testing.T) {
	tests := []struct {
		name string
		plan Plan
		want string // "" valid
	}{
		{name: "default", plan: Plan{Steps: DefaultSteps(), Pause: DefaultPause}},
		{name: "one step no pause", plan: Plan{Steps: []uint32{100}}},
		{name: "no steps", plan: Plan{}, want: "steps: at least one step"},
		{name: "zero", plan: Plan{Steps: []uint32{0}}, want: "steps[0]: 0% is not a share"},
		{name: "over 100", plan: Plan{Steps: []uint32{10, 101}}, want: "steps[1]: 101%"},
		{name: "not growing", plan: Plan{Steps: []uint32{50, 50}}, want: "steps[1]: 50% does not grow from 50%"},
		{name: "negative pause", plan: Plan{Steps: []uint32{1}, Pause: -1}, want: "pause: -1ns is not"},
		{name: "pause too long", plan: Plan{Steps: []uint32{1}, Pause: 25 * time.Hour}, want: "pause: 25h0m0s is not 0..24h0m0s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.plan.Validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestParseSteps(t *testing.T) {
	if got, err := ParseSteps(" 1%, 10 ,100"); err != nil || len(got) != 3 || got[0] != 1 || got[2] != 100 {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"", "10,,20", "ten", "-5", "10;20", "99999999999"} {
		if _, err := ParseSteps(bad); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
}

func FuzzParseSteps(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		steps, err := ParseSteps(s)
		if err == nil && len(steps) == 0 {
			t.Fatalf("%q: no steps and no error", s)
		}
		_ = Plan{Steps: steps}.Validate()
	})
}

func TestStateTransitions(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := New(1, Plan{Steps: []uint32{10, 50, 100}, Pause: 10 * time.Second}, 3, "aaa", versions.Record{Version: "bbb"}, t0)
	if !s.Active() || s.Percent() != 10 || !s.Due().Equal(t0.Add(10*time.Second)) || s.LastStep() {
		t.Fatalf("new: %+v", s)
	}
	// Paused 4 s into the step, resumed an hour later: 6 s are left.
	if err := s.Pause(t0.Add(4 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.Pause(t0); err == nil {
		t.Fatal("paused twice")
	}
	if s.Advance(t0.Add(time.Hour), "x") {
		t.Fatal("a paused rollout advanced")
	}
	if err := s.Resume(t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := s.Due().Sub(t0.Add(time.Hour)); got != 6*time.Second {
		t.Fatalf("left after resume: %v", got)
	}
	if !s.Advance(t0.Add(2*time.Hour), "pause elapsed") || s.Percent() != 50 || !s.Advance(t0.Add(3*time.Hour), "pause elapsed") || !s.LastStep() {
		t.Fatalf("advance: %+v", s)
	}
	if s.Advance(t0.Add(4*time.Hour), "x") {
		t.Fatal("advanced past the last step")
	}
	if err := s.End(t0.Add(5*time.Hour), Promoted, 4, "every step passed"); err != nil {
		t.Fatal(err)
	}
	if s.Active() || s.Percent() != 0 || s.Promoted != 4 {
		t.Fatalf("promoted: %+v", s)
	}
	if err := s.End(t0, Aborted, 0, ""); err == nil {
		t.Fatal("ended twice")
	}
	b, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(b)
	if err != nil || back.Phase != Promoted || len(back.Events) != len(s.Events) {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	if last := s.Events[len(s.Events)-1].Text; last != "promoted as version 4: every step passed" {
		t.Fatalf("last event %q", last)
	}
}

func TestEventsBounded(t *testing.T) {
	t0 := time.Now()
	s := New(1, Plan{Steps: []uint32{10}, Pause: time.Hour}, 1, "a", versions.Record{Version: "b"}, t0)
	for i := range 200 {
		_ = s.Pause(t0.Add(time.Duration(i)))
		_ = s.Resume(t0.Add(time.Duration(i)))
	}
	if len(s.Events) != maxEvents || !strings.HasPrefix(s.Events[0].Text, "started:") {
		t.Fatalf("%d events, first %q", len(s.Events), s.Events[0].Text)
	}
}

func TestDecodeRejectsBadStep(t *testing.T) {
	if _, err := Decode([]byte(`{"phase":"progressing","plan":{"steps":[10]},"step":3}`)); err == nil {
		t.Fatal("step out of range accepted")
	}
	if _, err := Decode([]byte(`{`)); err == nil {
		t.Fatal("bad JSON accepted")
	}
}
