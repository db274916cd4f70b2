// Package rollout is the state of a staged config change: a new desired
// document served to a growing share of the proxies (by their stable
// node-id bucket, the buckets of the extension canary by proxies), step by
// step with a pause per step, then promoted to every proxy as a new config
// version, or rolled back. The state is one store record (Key), written
// with compare-and-set by whoever changes it; the leader of Election moves
// it along the plan, so a MeshKit restart or a leader change resumes it
// where the record says. This package holds the record and its
// transitions, no I/O: meshkit serves it and drives it.
package rollout

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/omnirelay/omnirelay/internal/controlplane/versions"
)

// Key is the store key of the rollout record: the running rollout, or the
// last one finished.
const Key = "/rollout/current"

// Election is the store election whose leader drives rollouts.
const Election = "rollout"

// MaxPause bounds a step's pause.
const MaxPause = 24 * time.Hour

// maxEvents bounds the record's event log.
const maxEvents = 64

// Phase is where a rollout is.
type Phase string

// Phases. Progressing and Paused are active: the canary is served.
const (
	Progressing Phase = "progressing"
	Paused      Phase = "paused"
	Promoted    Phase = "promoted"
	RolledBack  Phase = "rolled_back"
	Aborted     Phase = "aborted"
	Superseded  Phase = "superseded"
)

// Plan is how a change is rolled out: the percents of proxies that get
// it, in order, each held for Pause before the next (and the last before
// promotion).
type Plan struct {
	Steps []uint32      `json:"steps"`
	Pause time.Duration `json:"pause"`
	// Gates, when enabled, judge every step on the proxies' load reports.
	Gates Gates `json:"gates,omitzero"`
}

// DefaultPause is the pause per step when none is given.
const DefaultPause = 30 * time.Second

// DefaultSteps is the plan's steps when none are given.
func DefaultSteps() []uint32 { return []uint32{10, 50, 100} }

// Validate reports a plan MeshKit cannot carry out, naming the field.
func (p Plan) Validate() error {
	if len(p.Steps) == 0 {
		return fmt.Errorf("steps: at least one step (a percent of proxies, 1..100) is required")
	}
	for i, s := range p.Steps {
		switch {
		case s == 0 || s > 100:
			return fmt.Errorf("steps[%d]: %d%% is not a share of proxies (1..100)", i, s)
		case i > 0 && s <= p.Steps[i-1]:
			return fmt.Errorf("steps[%d]: %d%% does not grow from %d%%", i, s, p.Steps[i-1])
		}
	}
	if p.Pause < 0 || p.Pause > MaxPause {
		return fmt.Errorf("pause: %v is not 0..%v", p.Pause, MaxPause)
	}
	return p.Gates.Validate()
}

// ParseSteps reads "10,50,100" (a trailing % allowed on each).
func ParseSteps(s string) ([]uint32, error) {
	var out []uint32
	for i, f := range strings.Split(s, ",") {
		f = strings.TrimSuffix(strings.TrimSpace(f), "%")
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("steps %q: item %d (%q) is not a percent", s, i, f)
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

// Event is one line of a rollout's log.
type Event struct {
	At   time.Time `json:"at"`
	Text string    `json:"text"`
}

// State is the rollout record.
type State struct {
	// ID numbers rollouts: each new one is the last one's plus one.
	ID   int64 `json:"id"`
	Plan Plan  `json:"plan"`
	// Stable is the number and digest of the version in force when it
	// started: what the proxies outside the canary are served.
	Stable        int64  `json:"stable"`
	StableVersion string `json:"stable_version"`
	// Canary is the staged document (its Number is 0 until promotion).
	Canary versions.Record `json:"canary"`
	// Step indexes Plan.Steps; StepStarted is when it began (adjusted on
	// resume so that a paused step keeps the pause it had left).
	Step        int       `json:"step"`
	StepStarted time.Time `json:"step_started"`
	Phase       Phase     `json:"phase"`
	// Left is the pause the step had left when it was paused.
	Left time.Duration `json:"left,omitempty"`
	// Promoted is the version number the promotion made.
	Promoted int64     `json:"promoted,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Started  time.Time `json:"started"`
	Ended    time.Time `json:"ended,omitzero"`
	Events   []Event   `json:"events,omitempty"`
	// Verdict is the gates' last verdict on the current step.
	Verdict *Verdict `json:"verdict,omitempty"`
	// Holding: the step's pause ended but its verdict is not ready yet.
	Holding bool `json:"holding,omitempty"`
}

// New starts a rollout of canary over stable.
func New(id int64, plan Plan, stable int64, stableVersion string, canary versions.Record, now time.Time) *State {
	s := &State{ID: id, Plan: plan, Stable: stable, StableVersion: stableVersion, Canary: canary,
		StepStarted: now, Phase: Progressing, Started: now}
	s.log(now, fmt.Sprintf("started: %s over version %d, steps %s, pause %v", canary.Version, stable, stepsString(plan.Steps), plan.Pause))
	return s
}

func stepsString(steps []uint32) string {
	parts := make([]string, len(steps))
	for i, s := range steps {
		parts[i] = strconv.FormatUint(uint64(s), 10) + "%"
	}
	return strings.Join(parts, ",")
}

// Active reports whether the canary is being served.
func (s *State) Active() bool { return s != nil && (s.Phase == Progressing || s.Phase == Paused) }

// Percent is the share of proxies served the canary now (0 when not
// active).
func (s *State) Percent() uint32 {
	if !s.Active() {
		return 0
	}
	return s.Plan.Steps[s.Step]
}

// Due is when the current step's pause ends (meaningful while
// Progressing).
func (s *State) Due() time.Time { return s.StepStarted.Add(s.Plan.Pause) }

// LastStep reports whether the current step is the plan's last.
func (s *State) LastStep() bool { return s.Step == len(s.Plan.Steps)-1 }

// Advance moves a progressing rollout to its next step; false at the last
// step (the next move is Promote).
func (s *State) Advance(now time.Time, why string) bool {
	if s.Phase != Progressing || s.LastStep() {
		return false
	}
	s.Step++
	s.StepStarted = now
	s.Verdict, s.Holding = nil, false
	s.log(now, fmt.Sprintf("step %d/%d: %d%% of proxies (%s)", s.Step+1, len(s.Plan.Steps), s.Percent(), why))
	return true
}

// Pause stops the clock of the current step.
func (s *State) Pause(now time.Time) error {
	if s.Phase != Progressing {
		return fmt.Errorf("rollout %d is %s, not progressing", s.ID, s.Phase)
	}
	s.Phase = Paused
	s.Left = max(s.Due().Sub(now), 0)
	s.log(now, fmt.Sprintf("paused at %d%% with %v of the step's pause left", s.Percent(), s.Left.Round(time.Millisecond)))
	return nil
}

// Resume restarts the clock of the current step with the pause it had
// left.
func (s *State) Resume(now time.Time) error {
	if s.Phase != Paused {
		return fmt.Errorf("rollout %d is %s, not paused", s.ID, s.Phase)
	}
	s.Phase = Progressing
	s.StepStarted = now.Add(s.Left - s.Plan.Pause)
	s.Left = 0
	s.log(now, fmt.Sprintf("resumed at %d%%", s.Percent()))
	return nil
}

// End finishes an active rollout in phase (Promoted with the version
// number it made, RolledBack, Aborted or Superseded).
func (s *State) End(now time.Time, phase Phase, promoted int64, reason string) error {
	if !s.Active() {
		return fmt.Errorf("rollout %d is already %s", s.ID, s.Phase)
	}
	s.Phase, s.Promoted, s.Reason, s.Ended = phase, promoted, reason, now
	text := string(phase)
	if promoted > 0 {
		text += fmt.Sprintf(" as version %d", promoted)
	}
	if reason != "" {
		text += ": " + reason
	}
	s.log(now, text)
	return nil
}

func (s *State) log(now time.Time, text string) {
	s.Events = append(s.Events, Event{At: now, Text: text})
	if len(s.Events) > maxEvents {
		s.Events = slices.Delete(s.Events, 1, len(s.Events)-maxEvents+1) // keep the start
	}
}

// Decode reads a stored record.
func Decode(b []byte) (*State, error) {
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("rollout: decode %s: %w", Key, err)
	}
	if s.Active() && (s.Step < 0 || s.Step >= len(s.Plan.Steps)) {
		return nil, fmt.Errorf("rollout: %s: step %d of %d", Key, s.Step, len(s.Plan.Steps))
	}
	return &s, nil
}

// Encode writes the record.
func (s *State) Encode() ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("rollout: encode: %w", err)
	}
	return b, nil
}
