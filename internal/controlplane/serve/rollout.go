package serve

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/omnirelay/omnirelay/internal/controlplane/api"
	"github.com/omnirelay/omnirelay/internal/controlplane/meshkit"
)

// rolloutAPI serves MeshKit's rollout steps through the API, giving its
// errors their gRPC codes.
type rolloutAPI struct{ m *meshkit.MeshKit }

var _ api.RolloutService = rolloutAPI{}

func (r rolloutAPI) Canary(ctx context.Context, name, pkg string, percent uint32, by string) (string, []string, error) {
	return rolloutResult(r.m.Canary(ctx, name, pkg, percent, by))
}

func (r rolloutAPI) Promote(ctx context.Context, name string) (string, []string, error) {
	return rolloutResult(r.m.Promote(ctx, name))
}

func (r rolloutAPI) Rollback(ctx context.Context, name string) (string, []string, error) {
	return rolloutResult(r.m.Rollback(ctx, name))
}

func rolloutResult(res meshkit.RolloutResult, err error) (string, []string, error) {
	switch {
	case errors.Is(err, meshkit.ErrNoCanary), errors.Is(err, meshkit.ErrRolloutActive):
		return "", nil, status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, meshkit.ErrNoExtension):
		return "", nil, status.Error(codes.NotFound, err.Error())
	case err != nil:
		return "", nil, err
	}
	return res.Version, res.Paths, nil
}
