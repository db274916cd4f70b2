package serve

import (
	"context"
	"errors"
	"strings"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/omnirelay/omnirelay/internal/controlplane/api"
	"github.com/omnirelay/omnirelay/internal/controlplane/meshkit"
	"github.com/omnirelay/omnirelay/internal/controlplane/rollout"
	"github.com/omnirelay/omnirelay/internal/controlplane/versions"
	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

// configRolloutAPI serves MeshKit's config rollouts through the API.
type configRolloutAPI struct {
	m       *meshkit.MeshKit
	proxies api.ProxyDirectory
}

var _ api.ConfigRolloutService = configRolloutAPI{}

// rolloutStatus gives the rollout errors their gRPC codes.
func rolloutStatus(err error) error {
	if errors.Is(err, meshkit.ErrRolloutActive) || errors.Is(err, meshkit.ErrNoRollout) {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return err
}

func (c configRolloutAPI) Start(ctx context.Context, req *meshkitv1.StartRolloutRequest) (*meshkitv1.ConfigRollout, error) {
	plan := rollout.Plan{Steps: req.GetSteps(), Pause: rollout.DefaultPause}
	if len(plan.Steps) == 0 {
		plan.Steps = rollout.DefaultSteps()
	}
	if req.Pause != nil {
		plan.Pause = req.GetPause().AsDuration()
	}
	if g := req.GetGates(); g != nil {
		plan.Gates = rollout.Gates{Window: g.GetWindow().AsDuration(), MinRequests: g.GetMinRequests(),
			MaxErrorRate: g.GetMaxErrorRate(), MaxErrorRatio: g.GetMaxErrorRatio(), MaxP99: g.GetMaxP99().AsDuration(), MaxP99Ratio: g.GetMaxP99Ratio()}
	}
	s, err := c.m.StartRollout(ctx, req.GetFilename(), req.GetYaml(), plan, versions.OriginApply)
	if err != nil {
		return nil, rolloutStatus(err)
	}
	return c.view(s), nil
}

func (c configRolloutAPI) Get(ctx context.Context) (*meshkitv1.ConfigRollout, error) {
	s, err := c.m.Rollout(ctx)
	if err != nil {
		return nil, err
	}
	return c.view(s), nil
}

func (c configRolloutAPI) Control(ctx context.Context, action, reason string) (*meshkitv1.ConfigRollout, error) {
	if reason == "" {
		reason = "by " + orUnknown(versions.AuthorFrom(ctx))
	}
	var (
		s   *rollout.State
		err error
	)
	switch action {
	case api.RolloutPause:
		s, err = c.m.PauseRollout(ctx)
	case api.RolloutResume:
		s, err = c.m.ResumeRollout(ctx)
	case api.RolloutPromote:
		s, err = c.m.PromoteRollout(ctx, reason)
	case api.RolloutAbort:
		s, err = c.m.AbortRollout(ctx, reason)
	default:
		return nil, status.Errorf(codes.InvalidArgument, "rollout action %q: want pause, resume, promote or abort", action)
	}
	if err != nil {
		return nil, rolloutStatus(err)
	}
	return c.view(s), nil
}

func orUnknown(s string) string {
	if s == "" {
		return "an unnamed caller"
	}
	return s
}

// view is the API's form of a rollout record, with the connected proxies
// counted by the listener version they ACKed last.
func (c configRolloutAPI) view(s *rollout.State) *meshkitv1.ConfigRollout {
	v := &meshkitv1.ConfigRollout{
		Id: s.ID, Phase: string(s.Phase), Steps: s.Plan.Steps, Pause: durationpb.New(s.Plan.Pause),
		Step: uint32(s.Step), Percent: s.Percent(), Stable: s.Stable, StableVersion: s.StableVersion,
		CanaryVersion: s.Canary.Version, Filename: s.Canary.Filename, Author: s.Canary.Author, Summary: s.Canary.Summary,
		StartedAt: timestamppb.New(s.Started), StepStartedAt: timestamppb.New(s.StepStarted),
		Promoted: s.Promoted, Reason: s.Reason,
	}
	if s.Phase == rollout.Progressing {
		v.NextStepAt = timestamppb.New(s.Due())
	}
	v.Holding = s.Holding
	if g := s.Plan.Gates; g.Enabled() {
		e := g.Effective()
		v.Gates = &meshkitv1.RolloutGates{Window: durationpb.New(e.Window), MinRequests: e.MinRequests,
			MaxErrorRate: g.MaxErrorRate, MaxErrorRatio: g.MaxErrorRatio, MaxP99Ratio: g.MaxP99Ratio}
		if g.MaxP99 > 0 {
			v.Gates.MaxP99 = durationpb.New(g.MaxP99)
		}
	}
	if vd := s.Verdict; vd != nil {
		v.Verdict = &meshkitv1.RolloutVerdict{At: timestamppb.New(vd.At), Canary: sideProto(vd.Canary), Stable: sideProto(vd.Stable),
			Ready: vd.Ready, Failed: vd.Failed, Skipped: vd.Skipped, Text: vd.String()}
	}
	if !s.Ended.IsZero() {
		v.EndedAt = timestamppb.New(s.Ended)
	}
	for _, e := range s.Events {
		v.Events = append(v.Events, &meshkitv1.RolloutEvent{At: timestamppb.New(e.At), Text: e.Text})
	}
	if c.proxies != nil {
		for _, p := range c.proxies.Proxies() {
			switch ver := p.GetAcked()[listenerType]; {
			case strings.HasPrefix(ver, s.Canary.Version+"-"):
				v.ProxiesCanary++
			case strings.HasPrefix(ver, s.StableVersion+"-"):
				v.ProxiesStable++
			}
		}
	}
	return v
}

// listenerType is the type URL whose ACKed version says which side a proxy runs.
const listenerType = resourcev3.ListenerType

func sideProto(f rollout.Figures) *meshkitv1.RolloutSide {
	out := &meshkitv1.RolloutSide{Requests: f.Requests, Errors: f.Errors, ErrorRate: f.ErrorRate}
	if f.HasP99 {
		out.P99 = durationpb.New(f.P99)
	}
	return out
}
