package meshkit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/omnirelay/omnirelay/internal/controlplane/rollout"
	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	"github.com/omnirelay/omnirelay/internal/controlplane/versions"
	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// ErrRolloutActive is returned for a change that would bypass a running
// rollout (a plain apply, an undo, an extension step): promote or abort it
// first, or stage the change as a new rollout.
var ErrRolloutActive = errors.New("a rollout is in progress")

// ErrNoRollout is returned by the rollout controls when no rollout is
// active.
var ErrNoRollout = errors.New("no rollout in progress")

// stagedChange is what the proxies in a running rollout's canary are
// served: the staged document, parsed, and the share of proxies.
type stagedChange struct {
	id      int64
	version string
	cfg     *config.Config
	percent uint32
}

// readRollout returns the rollout record and its key (nil and revision 0
// when there is none).
func (m *MeshKit) readRollout(ctx context.Context) (store.KV, *rollout.State, error) {
	kv, err := m.opt.Store.Get(ctx, rollout.Key)
	if errors.Is(err, store.ErrNotFound) {
		return store.KV{}, nil, nil
	}
	if err != nil {
		return store.KV{}, nil, fmt.Errorf("read %s: %w", rollout.Key, err)
	}
	s, err := rollout.Decode(kv.Value)
	if err != nil {
		return store.KV{}, nil, err
	}
	return kv, s, nil
}

// refuseDuringRollout is the check of the changes a rollout would not
// survive.
func (m *MeshKit) refuseDuringRollout(ctx context.Context, what string) error {
	_, s, err := m.readRollout(ctx)
	if err != nil {
		return err
	}
	if s.Active() {
		return fmt.Errorf("%s: rollout %d (%s at %d%%): %w; promote or abort it, or stage this change as a new rollout (apply --canary)",
			what, s.ID, s.Phase, s.Percent(), ErrRolloutActive)
	}
	return nil
}

// StartRollout stages data as a new rollout over the version in force,
// served at once to the plan's first share of proxies. A rollout already
// running is superseded: its canary gives way to this one, starting again
// from the first step, and the stable version stays.
func (m *MeshKit) StartRollout(ctx context.Context, filename string, data []byte, plan rollout.Plan, origin string) (*rollout.State, error) {
	if err := plan.Validate(); err != nil {
		return nil, &config.Error{Path: "rollout", Reason: err.Error()}
	}
	cfg, err := m.parseAndCheck(filename, data)
	if err != nil {
		return nil, err
	}
	_, cur, err := m.readDesired(ctx)
	if err != nil {
		return nil, err
	}
	if cur == nil {
		return nil, fmt.Errorf("a rollout stages a change over the config in force, and none is applied yet (apply without --canary first): %w", store.ErrNotFound)
	}
	digest := versions.DigestOf(data)
	if digest == cur.Version {
		return nil, &config.Error{Path: "yaml", Reason: fmt.Sprintf("the document is version %d, the one in force: nothing to roll out", cur.Number)}
	}
	kv, prev, err := m.readRollout(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	canary := versions.Record{Version: digest, Filename: filename, YAML: data, Author: versions.CleanAuthor(versions.AuthorFrom(ctx)),
		At: now.Truncate(time.Millisecond), Origin: origin, Parent: cur.Number, Summary: versions.Summarize(m.parsedOf(cur), cfg)}
	id := int64(1)
	if prev != nil {
		id = prev.ID + 1
	}
	s := rollout.New(id, plan, cur.Number, cur.Version, canary, now)
	if prev.Active() {
		s.Events = append([]rollout.Event{{At: now, Text: fmt.Sprintf("supersedes rollout %d (%s at %d%%)", prev.ID, prev.Canary.Version, prev.Percent())}}, s.Events...)
	}
	if err := m.putRollout(ctx, kv, s); err != nil {
		return nil, err
	}
	m.setStaged(s, cfg)
	m.opt.Log.Info("rollout started", "id", s.ID, "canary", digest, "stable", cur.Number, "steps", plan.Steps, "pause", plan.Pause.String(),
		"author", canary.Author, "superseded", prev.Active())
	m.kickDriver()
	return s, nil
}

func (m *MeshKit) putRollout(ctx context.Context, kv store.KV, s *rollout.State) error {
	val, err := s.Encode()
	if err != nil {
		return err
	}
	if _, err := m.opt.Store.Put(ctx, rollout.Key, val, kv.Revision); err != nil {
		return fmt.Errorf("store rollout %d: %w", s.ID, err)
	}
	return nil
}

// setStaged switches what the canary groups are served to s (cfg is its
// parsed canary, nil to parse it), and rebuilds when that changed.
func (m *MeshKit) setStaged(s *rollout.State, cfg *config.Config) {
	var next *stagedChange
	if s.Active() {
		m.mu.Lock()
		cur := m.staged
		m.mu.Unlock()
		if cfg == nil && cur != nil && cur.id == s.ID && cur.version == s.Canary.Version {
			cfg = cur.cfg
		}
		if cfg == nil {
			var err error
			if cfg, err = m.parseAndCheck(s.Canary.Filename, s.Canary.YAML); err != nil {
				// Served to nobody: the stable version stays everywhere.
				m.opt.Log.Error("staged configuration not loaded; the stable version is served to every proxy", "rollout", s.ID, "error", err)
				cfg = nil
			}
		}
		if cfg != nil {
			next = &stagedChange{id: s.ID, version: s.Canary.Version, cfg: cfg, percent: s.Percent()}
		}
	}
	m.mu.Lock()
	cur := m.staged
	m.staged = next
	m.mu.Unlock()
	same := (cur == nil && next == nil) || (cur != nil && next != nil && cur.id == next.id && cur.version == next.version && cur.percent == next.percent)
	if !same {
		m.trigger()
	}
}

// reloadRollout follows the stored rollout record.
func (m *MeshKit) reloadRollout(ctx context.Context) error {
	_, s, err := m.readRollout(ctx)
	if err != nil {
		return err
	}
	m.setStaged(s, nil)
	m.kickDriver()
	return nil
}

func (m *MeshKit) followRollout(ctx context.Context) {
	for ctx.Err() == nil {
		_, rev, err := m.opt.Store.List(ctx, rollout.Key)
		if err != nil {
			m.opt.Log.Warn("store list failed; retrying", "error", err)
			sleep(ctx, time.Second)
			continue
		}
		if err := m.reloadRollout(ctx); err != nil {
			m.opt.Log.Error("rollout record not loaded", "error", err)
		}
		for range m.opt.Store.Watch(ctx, rollout.Key, rev) {
			if err := m.reloadRollout(ctx); err != nil {
				m.opt.Log.Error("rollout record not loaded", "error", err)
			}
		}
	}
}

// Rollout returns the rollout record (the running one, or the last one
// finished); store.ErrNotFound when there never was one.
func (m *MeshKit) Rollout(ctx context.Context) (*rollout.State, error) {
	_, s, err := m.readRollout(ctx)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, fmt.Errorf("no rollout yet: %w", store.ErrNotFound)
	}
	return s, nil
}

// changeRollout applies edit to the active rollout with compare-and-set,
// retrying on a concurrent write.
func (m *MeshKit) changeRollout(ctx context.Context, what string, edit func(s *rollout.State, now time.Time) error) (*rollout.State, error) {
	for attempt := 1; ; attempt++ {
		kv, s, err := m.readRollout(ctx)
		if err != nil {
			return nil, err
		}
		if !s.Active() {
			return nil, fmt.Errorf("%s: %w", what, ErrNoRollout)
		}
		if err := edit(s, time.Now().UTC()); err != nil {
			return nil, err
		}
		err = m.putRollout(ctx, kv, s)
		if errors.Is(err, store.ErrConflict) && attempt < commitAttempts {
			continue
		}
		if err != nil {
			return nil, err
		}
		m.setStaged(s, nil)
		m.kickDriver()
		m.opt.Log.Info("rollout "+what, "id", s.ID, "phase", s.Phase, "percent", s.Percent())
		return s, nil
	}
}

// PauseRollout holds the running rollout at its current step.
func (m *MeshKit) PauseRollout(ctx context.Context) (*rollout.State, error) {
	return m.changeRollout(ctx, "pause", func(s *rollout.State, now time.Time) error {
		if err := s.Pause(now); err != nil {
			return &config.Error{Path: "rollout", Reason: err.Error()}
		}
		return nil
	})
}

// ResumeRollout continues a paused rollout with the pause its step had
// left.
func (m *MeshKit) ResumeRollout(ctx context.Context) (*rollout.State, error) {
	return m.changeRollout(ctx, "resume", func(s *rollout.State, now time.Time) error {
		if err := s.Resume(now); err != nil {
			return &config.Error{Path: "rollout", Reason: err.Error()}
		}
		return nil
	})
}

// AbortRollout ends the running rollout: every proxy is served the stable
// version again.
func (m *MeshKit) AbortRollout(ctx context.Context, reason string) (*rollout.State, error) {
	return m.endRollout(ctx, rollout.Aborted, reason)
}

// RollBackRollout is AbortRollout for a failed gate.
func (m *MeshKit) RollBackRollout(ctx context.Context, reason string) (*rollout.State, error) {
	return m.endRollout(ctx, rollout.RolledBack, reason)
}

func (m *MeshKit) endRollout(ctx context.Context, phase rollout.Phase, reason string) (*rollout.State, error) {
	return m.changeRollout(ctx, string(phase), func(s *rollout.State, now time.Time) error {
		return s.End(now, phase, 0, reason)
	})
}

// PromoteRollout makes the running rollout's canary the desired config of
// every proxy now, as a new version (origin rollout), skipping the steps
// left.
func (m *MeshKit) PromoteRollout(ctx context.Context, reason string) (*rollout.State, error) {
	for attempt := 1; ; attempt++ {
		rkv, s, err := m.readRollout(ctx)
		if err != nil {
			return nil, err
		}
		if !s.Active() {
			return nil, fmt.Errorf("promote: %w", ErrNoRollout)
		}
		dkv, cur, err := m.readDesired(ctx)
		if err != nil {
			return nil, err
		}
		number := int64(0)
		if cur != nil && cur.Version == s.Canary.Version {
			number = cur.Number // promoted before a crash: only the record is left to write
		} else {
			cfg, err := m.parseAndCheck(s.Canary.Filename, s.Canary.YAML)
			if err != nil {
				return nil, fmt.Errorf("rollout %d: the staged configuration no longer applies: %w", s.ID, err)
			}
			ctx := versions.WithAuthor(ctx, s.Canary.Author)
			note := []string{fmt.Sprintf("rollout %d promoted (%s)", s.ID, reason)}
			d, err := m.commit(ctx, dkv, cur, s.Canary.Filename, s.Canary.YAML, cfg, versions.OriginRollout, note)
			if errors.Is(err, store.ErrConflict) && attempt < commitAttempts {
				continue
			}
			if err != nil {
				return nil, err
			}
			number = d.Number
		}
		if err := s.End(time.Now().UTC(), rollout.Promoted, number, reason); err != nil {
			return nil, err
		}
		err = m.putRollout(ctx, rkv, s)
		if errors.Is(err, store.ErrConflict) && attempt < commitAttempts {
			continue
		}
		if err != nil {
			return nil, err
		}
		m.setStaged(s, nil)
		m.opt.Log.Info("rollout promoted", "id", s.ID, "number", number, "version", s.Canary.Version, "reason", reason)
		return s, nil
	}
}

// ApplyFollowed applies a followed config file's new content: as a new
// rollout when a rollout is running (superseding it, with its plan) or
// when plan is set, else as a plain apply.
func (m *MeshKit) ApplyFollowed(ctx context.Context, path string, data []byte, plan *rollout.Plan) (Applied, *rollout.State, error) {
	_, s, err := m.readRollout(ctx)
	if err != nil {
		return Applied{}, nil, err
	}
	switch {
	case s.Active() && (versions.DigestOf(data) == s.StableVersion || versions.DigestOf(data) == s.Canary.Version):
		// The stable document (a restart re-reading an unchanged file) or
		// the canary itself: nothing new to roll out, the rollout goes on.
		return Applied{Version: versions.DigestOf(data), Number: s.Stable, Unchanged: true}, nil, nil
	case s.Active():
		p := s.Plan
		if plan != nil {
			p = *plan
		}
		st, err := m.StartRollout(ctx, path, data, p, versions.OriginFile)
		return Applied{}, st, err
	case plan != nil:
		_, cur, err := m.readDesired(ctx)
		if err != nil {
			return Applied{}, nil, err
		}
		if cur != nil {
			if cur.Version == versions.DigestOf(data) {
				return Applied{Version: cur.Version, Number: cur.Number, Unchanged: true}, nil, nil
			}
			st, err := m.StartRollout(ctx, path, data, *plan, versions.OriginFile)
			return Applied{}, st, err
		}
	}
	a, err := m.ApplyVersion(ctx, path, data, versions.OriginFile)
	return a, nil, err
}

// LeadsRollouts reports whether this replica leads the rollout election
// (its driver moves rollouts on).
func (m *MeshKit) LeadsRollouts() bool { return m.leading.Load() }

// kickDriver wakes the rollout driver (a record changed).
func (m *MeshKit) kickDriver() {
	select {
	case m.rolloutKick <- struct{}{}:
	default:
	}
}

// driveRollouts moves rollouts along their plans while this replica leads
// the rollout election; one replica at a time does, so steps are taken
// once. A new leader (or this one restarted) resumes from the record.
func (m *MeshKit) driveRollouts(ctx context.Context) {
	id := m.opt.Directory.ReplicaID
	if id == "" {
		id = "meshkit"
	}
	for ctx.Err() == nil {
		lead, err := m.opt.Store.Campaign(ctx, rollout.Election, id)
		if err != nil {
			if ctx.Err() == nil {
				m.opt.Log.Warn("rollout election failed; retrying", "replica", id, "error", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		m.opt.Log.Info("leading rollouts", "replica", id)
		m.leading.Store(true)
		m.driveWhileLeading(ctx, lead.Lost())
		m.leading.Store(false)
		select {
		case <-lead.Lost():
			m.opt.Log.Warn("lost rollout leadership", "replica", id)
		default:
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = lead.Resign(rctx)
			cancel()
		}
	}
}

func (m *MeshKit) driveWhileLeading(ctx context.Context, lost <-chan struct{}) {
	for {
		wait := m.driveStep(ctx)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-lost:
			t.Stop()
			return
		case <-m.rolloutKick:
		case <-t.C:
		}
		t.Stop()
	}
}

// idleRecheck is how often the driver looks at the record with nothing
// due (the store watch wakes it sooner on any change).
const idleRecheck = 5 * time.Second

// driveStep takes the step that is due, if any, and says how long to wait
// for the next.
func (m *MeshKit) driveStep(ctx context.Context) time.Duration {
	_, s, err := m.readRollout(ctx)
	if err != nil {
		m.opt.Log.Warn("rollout record not read", "error", err)
		return time.Second
	}
	if s == nil || s.Phase != rollout.Progressing {
		return idleRecheck
	}
	gated := s.Plan.Gates.Enabled()
	var v rollout.Verdict
	if gated {
		var done bool
		if v, done = m.checkGates(ctx, s); done {
			return 0
		}
	}
	if left := time.Until(s.Due()); left > 0 {
		if gated {
			return min(left, gateTick(s.Plan.Gates))
		}
		return left
	}
	if gated && !v.Pass() {
		// The pause is over but the window does not hold enough canary
		// requests for a verdict: the step is held until it does.
		if !s.Holding {
			_, _ = m.changeRollout(ctx, "hold", func(cur *rollout.State, now time.Time) error {
				if cur.ID == s.ID && cur.Step == s.Step && !cur.Holding {
					cur.Holding = true
					cur.Events = append(cur.Events, rollout.Event{At: now, Text: "holding: " + v.String()})
				}
				return nil
			})
		}
		return gateTick(s.Plan.Gates)
	}
	if s.LastStep() {
		why := "every step passed"
		if gated {
			why += "; gates: " + v.String()
		}
		if _, err := m.PromoteRollout(ctx, why); err != nil {
			m.opt.Log.Error("rollout not promoted; retrying", "id", s.ID, "error", err)
			return time.Second
		}
		return idleRecheck
	}
	if _, err := m.changeRollout(ctx, "step", func(s *rollout.State, now time.Time) error {
		if s.Phase != rollout.Progressing || now.Before(s.Due()) {
			return nil // changed meanwhile: the next round sees it
		}
		why := "pause elapsed"
		if gated {
			why = "gates passed: " + v.String()
		}
		s.Advance(now, why)
		return nil
	}); err != nil && !errors.Is(err, ErrNoRollout) {
		m.opt.Log.Error("rollout step not taken; retrying", "id", s.ID, "error", err)
		return time.Second
	}
	return 0
}
