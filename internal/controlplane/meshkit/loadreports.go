package meshkit

import (
	"context"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/omnirelay/omnirelay/internal/controlplane/loadstats"
	"github.com/omnirelay/omnirelay/internal/controlplane/rollout"
	"github.com/omnirelay/omnirelay/internal/controlplane/xdsserver"
	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// DefaultLoadReportInterval is how often proxies are asked to report
// their load.
const DefaultLoadReportInterval = time.Second

// loadReceiver takes the proxies' LRS streams: each report is counted for
// the running rollout, on the side of the canary its node's bucket is on.
// Reports with no rollout running are not kept.
type loadReceiver struct{ m *MeshKit }

var _ xdsserver.LoadReports = loadReceiver{}

func (r loadReceiver) Open(*corev3.Node) (*lrsv3.LoadStatsResponse, error) {
	iv := r.m.opt.LoadReportInterval
	if iv <= 0 {
		iv = DefaultLoadReportInterval
	}
	return &lrsv3.LoadStatsResponse{SendAllClusters: true, LoadReportingInterval: durationpb.New(iv)}, nil
}

func (r loadReceiver) Report(node *corev3.Node, req *lrsv3.LoadStatsRequest) {
	r.m.mu.Lock()
	st := r.m.staged
	r.m.mu.Unlock()
	if st == nil {
		return
	}
	side := loadstats.Stable
	if config.InProxyCanary(groupOf(node).bucket, st.percent) {
		side = loadstats.Canary
	}
	r.m.loads.Record(time.Now(), st.id, side, loadstats.FromRequest(req))
}

// LoadReports is the LRS receiver to give the xDS server.
func (m *MeshKit) LoadReports() xdsserver.LoadReports { return loadReceiver{m} }

func figures(l loadstats.Load) rollout.Figures {
	f := rollout.Figures{Requests: l.Requests, Errors: l.Errors, ErrorRate: l.ErrorRate()}
	f.P99, f.HasP99 = l.P99()
	return f
}

// judge is the gates' verdict on the current step of s, from the reports
// received since the step began, within the window.
func (m *MeshKit) judge(ctx context.Context, s *rollout.State, now time.Time) rollout.Verdict {
	g := s.Plan.Gates.Effective()
	since := now.Add(-g.Window)
	// A report covers the interval before it arrived: the first one after
	// the step began may hold the traffic of the step before (or of the
	// previous rollout), so the step's figures start one interval later.
	iv := m.opt.LoadReportInterval
	if iv <= 0 {
		iv = DefaultLoadReportInterval
	}
	if first := s.StepStarted.Add(iv); first.After(since) {
		since = first
	}
	canary, stable := m.loads.Sum(s.ID, since)
	// Proxies connected to other replicas report there. Their shares are
	// per second: a second that began before since counts from its end.
	m.sharedLoads(ctx, s.ID, since, &canary, &stable)
	return g.Judge(now, figures(canary), figures(stable))
}

// gateTick is how often the driver judges a gated step.
func gateTick(g rollout.Gates) time.Duration {
	return min(max(g.Effective().Window/10, 100*time.Millisecond), time.Second)
}

// checkGates judges a progressing rollout's step: a failed gate rolls it
// back (true: nothing more to do this round); the verdict is recorded at
// most once per tick.
func (m *MeshKit) checkGates(ctx context.Context, s *rollout.State) (rollout.Verdict, bool) {
	now := time.Now().UTC()
	v := m.judge(ctx, s, now)
	if len(v.Failed) > 0 {
		reason := "gate failed at " + strconv.FormatUint(uint64(s.Percent()), 10) + "%: " + v.String()
		if _, err := m.changeRollout(ctx, "rolled back", func(s *rollout.State, now time.Time) error {
			s.Verdict = &v
			return s.End(now, rollout.RolledBack, 0, reason)
		}); err != nil {
			m.opt.Log.Error("rollout not rolled back; retrying", "id", s.ID, "error", err)
			return v, true
		}
		m.opt.Log.Warn("rollout rolled back", "id", s.ID, "reason", reason)
		return v, true
	}
	if now.Sub(m.verdictWritten) >= gateTick(s.Plan.Gates) {
		m.verdictWritten = now
		if _, err := m.changeRollout(ctx, "verdict", func(cur *rollout.State, _ time.Time) error {
			if cur.ID == s.ID && cur.Step == s.Step {
				cur.Verdict = &v
			}
			return nil
		}); err != nil {
			m.opt.Log.Warn("rollout verdict not recorded", "id", s.ID, "error", err)
		}
	}
	return v, false
}
