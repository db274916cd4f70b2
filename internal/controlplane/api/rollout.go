package api

import (
	"context"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

// RolloutService moves extensions through canary, promotion and rollback by
// rewriting the desired config. Each method returns the config version it
// stored and the document paths of the entries it rewrote. Errors are
// mapped like ConfigService's; an implementation reports "no canary" and
// "no such extension" as gRPC status errors (FAILED_PRECONDITION,
// NOT_FOUND). Methods are called concurrently from request goroutines.
type RolloutService interface {
	Canary(ctx context.Context, extension, pkg string, percent uint32, by string) (version string, entries []string, err error)
	Promote(ctx context.Context, extension string) (version string, entries []string, err error)
	Rollback(ctx context.Context, extension string) (version string, entries []string, err error)
}

type rolloutService struct {
	meshkitv1.UnimplementedRolloutsServer
	s *Server
}

var _ meshkitv1.RolloutsServer = rolloutService{}

func (r rolloutService) do(name, step string, f func(RolloutService) (string, []string, error)) (*meshkitv1.RolloutResponse, error) {
	if r.s.rollouts == nil {
		return nil, status.Error(codes.Unimplemented, "this MeshKit has no rollout service")
	}
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "extension: a name is required")
	}
	version, entries, err := f(r.s.rollouts)
	if err != nil {
		r.s.log.Info("rollout step refused", "step", step, "extension", name, "err", err)
		return nil, toStatus(err)
	}
	r.s.log.Info("rollout step applied", "step", step, "extension", name, "version", version, "entries", len(entries))
	return &meshkitv1.RolloutResponse{Version: version, Entries: entries}, nil
}

func (r rolloutService) Canary(ctx context.Context, req *meshkitv1.CanaryRequest) (*meshkitv1.RolloutResponse, error) {
	return r.do(req.GetExtension(), "canary", func(rs RolloutService) (string, []string, error) {
		return rs.Canary(ctx, req.GetExtension(), req.GetPackage(), req.GetPercent(), req.GetBy())
	})
}

func (r rolloutService) Promote(ctx context.Context, req *meshkitv1.PromoteRequest) (*meshkitv1.RolloutResponse, error) {
	return r.do(req.GetExtension(), "promote", func(rs RolloutService) (string, []string, error) {
		return rs.Promote(ctx, req.GetExtension())
	})
}

func (r rolloutService) Rollback(ctx context.Context, req *meshkitv1.RollbackRequest) (*meshkitv1.RolloutResponse, error) {
	return r.do(req.GetExtension(), "rollback", func(rs RolloutService) (string, []string, error) {
		return rs.Rollback(ctx, req.GetExtension())
	})
}

// routeRollouts adds the rollout routes to the gateway:
//
//	POST /v1/extensions/{extension}/canary     body: CanaryRequest (extension from the path) → RolloutResponse
//	POST /v1/extensions/{extension}/promote    RolloutResponse
//	POST /v1/extensions/{extension}/rollback   RolloutResponse
func (s *Server) routeRollouts(mux *http.ServeMux) {
	ro := rolloutService{s: s}
	mux.Handle("/v1/extensions/{extension}/canary", methods(map[string]http.HandlerFunc{
		http.MethodPost: func(w http.ResponseWriter, r *http.Request) {
			req := &meshkitv1.CanaryRequest{}
			if err := readJSON(w, r, req, false); err != nil {
				writeError(w, err)
				return
			}
			name := r.PathValue("extension")
			if req.GetExtension() != "" && req.GetExtension() != name {
				writeError(w, status.Errorf(codes.InvalidArgument, "body names extension %q but the path names %q", req.GetExtension(), name))
				return
			}
			req.Extension = name
			respond(w)(ro.Canary(r.Context(), req))
		},
	}))
	mux.Handle("/v1/extensions/{extension}/promote", methods(map[string]http.HandlerFunc{
		http.MethodPost: func(w http.ResponseWriter, r *http.Request) {
			respond(w)(ro.Promote(r.Context(), &meshkitv1.PromoteRequest{Extension: r.PathValue("extension")}))
		},
	}))
	mux.Handle("/v1/extensions/{extension}/rollback", methods(map[string]http.HandlerFunc{
		http.MethodPost: func(w http.ResponseWriter, r *http.Request) {
			respond(w)(ro.Rollback(r.Context(), &meshkitv1.RollbackRequest{Extension: r.PathValue("extension")}))
		},
	}))
}
