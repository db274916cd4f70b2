package serve

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/omnirelay/omnirelay/internal/controlplane/api"
	"github.com/omnirelay/omnirelay/internal/controlplane/meshkit"
	"github.com/omnirelay/omnirelay/internal/controlplane/versions"
	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

// configAPI serves MeshKit's desired config and its history through the
// API.
type configAPI struct{ m *meshkit.MeshKit }

var (
	_ api.ConfigService  = configAPI{}
	_ api.VersionService = configAPI{}
)

func (c configAPI) Apply(ctx context.Context, filename string, yaml []byte) (string, error) {
	v, err := c.m.Apply(ctx, filename, yaml)
	return v, rolloutStatus(err)
}

func (c configAPI) Get(ctx context.Context) ([]byte, string, error) { return c.m.Get(ctx) }

func (c configAPI) ApplyVersion(ctx context.Context, filename string, yaml []byte) (*meshkitv1.ApplyResponse, error) {
	a, err := c.m.ApplyVersion(ctx, filename, yaml, versions.OriginApply)
	if err != nil {
		return nil, rolloutStatus(err)
	}
	return &meshkitv1.ApplyResponse{Version: a.Version, Number: a.Number, Unchanged: a.Unchanged}, nil
}

func (c configAPI) Current(ctx context.Context) (*meshkitv1.GetConfigResponse, error) {
	yaml, version, err := c.m.Get(ctx)
	if err != nil {
		return nil, err
	}
	return &meshkitv1.GetConfigResponse{Yaml: yaml, Version: version, Number: c.m.Current()}, nil
}

func (c configAPI) History(ctx context.Context) (*meshkitv1.HistoryResponse, error) {
	recs, keep, err := c.m.History(ctx)
	if err != nil {
		return nil, err
	}
	cur := c.m.Current()
	resp := &meshkitv1.HistoryResponse{Keep: uint32(keep), Versions: make([]*meshkitv1.ConfigVersion, 0, len(recs))}
	for i := range recs {
		v := versionProto(&recs[i])
		v.Current = v.Number == cur
		resp.Versions = append(resp.Versions, v)
	}
	return resp, nil
}

func (c configAPI) Version(ctx context.Context, n int64) (*meshkitv1.ConfigVersion, error) {
	r, err := c.m.Version(ctx, n)
	if err != nil {
		return nil, err
	}
	v := versionProto(r)
	v.Yaml = r.YAML
	v.Current = n == c.m.Current()
	return v, nil
}

func (c configAPI) Diff(ctx context.Context, from, to int64) (*meshkitv1.DiffResponse, error) {
	d, err := c.m.Diff(ctx, from, to)
	if err != nil {
		return nil, err
	}
	return &meshkitv1.DiffResponse{Summary: d.Summary, Unified: d.Unified}, nil
}

func (c configAPI) Undo(ctx context.Context, to int64) (*meshkitv1.ApplyResponse, error) {
	a, err := c.m.Undo(ctx, to)
	if err != nil {
		return nil, rolloutStatus(err)
	}
	return &meshkitv1.ApplyResponse{Version: a.Version, Number: a.Number}, nil
}

func versionProto(r *versions.Record) *meshkitv1.ConfigVersion {
	return &meshkitv1.ConfigVersion{
		Number: r.Number, Parent: r.Parent, Version: r.Version, Filename: r.Filename, Author: r.Author,
		CreatedAt: timestamppb.New(r.At), Origin: r.Origin, Summary: r.Summary,
		Signature: r.Signature, KeyId: r.KeyID,
	}
}
