package api

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

// ConfigRolloutService stages whole-config changes to a share of proxies
// (meshkit.proto's ConfigRollouts). An implementation answers "no rollout
// running" and "a rollout is in progress" as FAILED_PRECONDITION status
// errors; other errors are mapped like ConfigService's. Methods are called
// concurrently from request goroutines.
type ConfigRolloutService interface {
	Start(ctx context.Context, req *meshkitv1.StartRolloutRequest) (*meshkitv1.ConfigRollout, error)
	Get(ctx context.Context) (*meshkitv1.ConfigRollout, error)
	// Control is pause, resume, promote or abort.
	Control(ctx context.Context, action, reason string) (*meshkitv1.ConfigRollout, error)
}

// Rollout controls, the actions of ConfigRolloutService.Control.
const (
	RolloutPause   = "pause"
	RolloutResume  = "resume"
	RolloutPromote = "promote"
	RolloutAbort   = "abort"
)

type configRolloutService struct {
	meshkitv1.UnimplementedConfigRolloutsServer
	s *Server
}

var _ meshkitv1.ConfigRolloutsServer = configRolloutService{}

func (c configRolloutService) svc() (ConfigRolloutService, error) {
	if c.s.configRollouts == nil {
		return nil, status.Error(codes.Unimplemented, "this MeshKit runs no config rollouts")
	}
	return c.s.configRollouts, nil
}

func (c configRolloutService) Start(ctx context.Context, req *meshkitv1.StartRolloutRequest) (*meshkitv1.ConfigRollout, error) {
	svc, err := c.svc()
	if err != nil {
		return nil, err
	}
	if req.GetFilename() == "" {
		req.Filename = "config.yaml"
	}
	if req.Pause != nil {
		if err := req.GetPause().CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "pause: %v", err)
		}
	}
	resp, err := svc.Start(withAuthor(ctx), req)
	if err != nil {
		c.s.log.Info("rollout refused", "file", req.GetFilename(), "err", err)
		return nil, toStatus(err)
	}
	c.s.log.Info("rollout started", "id", resp.GetId(), "canary", resp.GetCanaryVersion(), "steps", resp.GetSteps())
	return resp, nil
}

func (c configRolloutService) Get(ctx context.Context, _ *meshkitv1.GetRolloutRequest) (*meshkitv1.ConfigRollout, error) {
	svc, err := c.svc()
	if err != nil {
		return nil, err
	}
	resp, err := svc.Get(ctx)
	return resp, mapErr(err)
}

func (c configRolloutService) control(ctx context.Context, action, reason string) (*meshkitv1.ConfigRollout, error) {
	svc, err := c.svc()
	if err != nil {
		return nil, err
	}
	resp, err := svc.Control(withAuthor(ctx), action, reason)
	if err != nil {
		c.s.log.Info("rollout control refused", "action", action, "err", err)
		return nil, toStatus(err)
	}
	c.s.log.Info("rollout control", "action", action, "id", resp.GetId(), "phase", resp.GetPhase())
	return resp, nil
}

func (c configRolloutService) Pause(ctx context.Context, req *meshkitv1.RolloutControlRequest) (*meshkitv1.ConfigRollout, error) {
	return c.control(ctx, RolloutPause, req.GetReason())
}

func (c configRolloutService) Resume(ctx context.Context, req *meshkitv1.RolloutControlRequest) (*meshkitv1.ConfigRollout, error) {
	return c.control(ctx, RolloutResume, req.GetReason())
}

func (c configRolloutService) Promote(ctx context.Context, req *meshkitv1.RolloutControlRequest) (*meshkitv1.ConfigRollout, error) {
	return c.control(ctx, RolloutPromote, req.GetReason())
}

func (c configRolloutService) Abort(ctx context.Context, req *meshkitv1.RolloutControlRequest) (*meshkitv1.ConfigRollout, error) {
	return c.control(ctx, RolloutAbort, req.GetReason())
}

// routeConfigRollouts adds the config rollout routes to the gateway:
//
//	GET  /v1/rollout                                   ConfigRollout
//	POST /v1/rollout?filename=F&steps=10,50,100&pause=30s   body: YAML → ConfigRollout
//	POST /v1/rollout/{pause|resume|promote|abort}      body (optional): {"reason"} → ConfigRollout
func (s *Server) routeConfigRollouts(mux *http.ServeMux) {
	cr := configRolloutService{s: s}
	mux.Handle("/v1/rollout", methods(map[string]http.HandlerFunc{
		http.MethodGet: func(w http.ResponseWriter, r *http.Request) {
			respond(w)(cr.Get(r.Context(), &meshkitv1.GetRolloutRequest{}))
		},
		http.MethodPost: func(w http.ResponseWriter, r *http.Request) {
			body, err := readBody(w, r, maxConfigBody)
			if err != nil {
				writeError(w, err)
				return
			}
			q := r.URL.Query()
			req := &meshkitv1.StartRolloutRequest{Filename: q.Get("filename"), Yaml: body}
			if v := q.Get("steps"); v != "" {
				for _, f := range strings.Split(v, ",") {
					n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(f), "%"), 10, 32)
					if err != nil {
						writeError(w, status.Errorf(codes.InvalidArgument, "query steps=%q: %q is not a percent", v, f))
						return
					}
					req.Steps = append(req.Steps, uint32(n))
				}
			}
			if v := q.Get("pause"); v != "" {
				d, err := time.ParseDuration(v)
				if err != nil {
					writeError(w, status.Errorf(codes.InvalidArgument, "query pause=%q: %v", v, err))
					return
				}
				req.Pause = durationpb.New(d)
			}
			respond(w)(cr.Start(gatewayAuthor(r), req))
		},
	}))
	mux.Handle("/v1/rollout/{action}", methods(map[string]http.HandlerFunc{
		http.MethodPost: func(w http.ResponseWriter, r *http.Request) {
			req := &meshkitv1.RolloutControlRequest{}
			if err := readJSON(w, r, req, true); err != nil {
				writeError(w, err)
				return
			}
			ctx := gatewayAuthor(r)
			switch a := r.PathValue("action"); a {
			case RolloutPause:
				respond(w)(cr.Pause(ctx, req))
			case RolloutResume:
				respond(w)(cr.Resume(ctx, req))
			case RolloutPromote:
				respond(w)(cr.Promote(ctx, req))
			case RolloutAbort:
				respond(w)(cr.Abort(ctx, req))
			default:
				writeError(w, status.Errorf(codes.NotFound, "no rollout action %q (pause, resume, promote, abort)", a))
			}
		},
	}))
}
