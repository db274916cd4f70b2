// Package extstore is MeshKit's extension package store: the Packages gRPC
// service (omnictl ext push, ext list) over MeshKit's Store, so that every
// replica sees the same packages.
//
// MeshKit checks what it can without trusting anyone: the package is well
// formed, signed, and its payload matches its manifest. Whether the signer
// is trusted is each proxy's decision, made when it loads the package.
// Versions are immutable: a name and version, once stored, always mean the
// same bytes, so a config that names one is reproducible.
package extstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	"github.com/omnirelay/omnirelay/internal/shared/dslrules"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
)

// Prefix is where packages live in the store: Prefix + name + "/" + version.
const Prefix = "/extensions/"

// MaxPackageBytes bounds a pushed package: gRPC's default message size, and
// within what etcd accepts for one value.
const MaxPackageBytes = 1 << 20

// Service implements extensionsv1.PackagesServer.
type Service struct {
	extv1.UnimplementedPackagesServer
	st  store.Store
	log *slog.Logger
	now func() time.Time
}

// New returns the service over st.
func New(st store.Store, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{st: st, log: log, now: time.Now}
}

// Register adds the service to g.
func (s *Service) Register(g *grpc.Server) { extv1.RegisterPackagesServer(g, s) }

func key(name, version string) string { return Prefix + name + "/" + version }

// Push implements extensionsv1.PackagesServer.
func (s *Service) Push(ctx context.Context, req *extv1.PushRequest) (*extv1.PushResponse, error) {
	pkg := req.GetPackage()
	if len(pkg) > MaxPackageBytes {
		return nil, status.Errorf(codes.InvalidArgument, "package is %d bytes, at most %d", len(pkg), MaxPackageBytes)
	}
	p, signed, err := extpkg.Inspect(pkg)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if !signed {
		return nil, status.Errorf(codes.FailedPrecondition, "package %s@%s is not signed (omnictl ext sign)", p.Manifest.Name, p.Manifest.Version)
	}
	if p.Manifest.Kind == extpkg.KindDSL {
		// Rules that do not type-check would be refused by every proxy.
		if _, err := dslrules.Compile(p.Payload); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "package %s@%s: %v", p.Manifest.Name, p.Manifest.Version, err)
		}
	}
	m := p.Manifest
	rec := &extv1.GetResponse{Info: &extv1.PackageInfo{
		Name: m.Name, Version: m.Version, Kind: m.Kind, Abi: m.ABI, PayloadSha256: m.PayloadSHA256,
		Size: uint64(len(pkg)), PushedAt: timestamppb.New(s.now()),
	}, Package: pkg}
	b, err := proto.Marshal(rec)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode %s@%s: %v", m.Name, m.Version, err)
	}
	k := key(m.Name, m.Version)
	if _, err := s.st.Put(ctx, k, b, 0); err != nil {
		if !errors.Is(err, store.ErrConflict) {
			return nil, status.Errorf(codes.Unavailable, "store %s@%s: %v", m.Name, m.Version, err)
		}
		old, err := s.get(ctx, k)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(old.GetPackage(), pkg) {
			return nil, status.Errorf(codes.AlreadyExists, "%s@%s is already stored with other content (sha256 %s): versions are immutable, push a new version",
				m.Name, m.Version, old.GetInfo().GetPayloadSha256())
		}
		return &extv1.PushResponse{Package: old.GetInfo()}, nil
	}
	s.log.Info("extension package stored", "extension", m.Name, "version", m.Version, "kind", m.Kind, "sha256", m.PayloadSHA256)
	return &extv1.PushResponse{Package: rec.GetInfo(), Created: true}, nil
}

// List implements extensionsv1.PackagesServer.
func (s *Service) List(ctx context.Context, req *extv1.ListRequest) (*extv1.ListResponse, error) {
	prefix := Prefix
	if n := req.GetName(); n != "" {
		if strings.Contains(n, "/") {
			return nil, status.Errorf(codes.InvalidArgument, "name %q", n)
		}
		prefix += n + "/"
	}
	kvs, _, err := s.st.List(ctx, prefix)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list packages: %v", err)
	}
	out := &extv1.ListResponse{}
	for _, kv := range kvs {
		var rec extv1.GetResponse
		if err := proto.Unmarshal(kv.Value, &rec); err != nil {
			return nil, status.Errorf(codes.Internal, "stored package %s: %v", kv.Key, err)
		}
		out.Packages = append(out.Packages, rec.GetInfo())
	}
	return out, nil
}

// Get implements extensionsv1.PackagesServer.
func (s *Service) Get(ctx context.Context, req *extv1.GetRequest) (*extv1.GetResponse, error) {
	if req.GetName() == "" || req.GetVersion() == "" || strings.Contains(req.GetName(), "/") {
		return nil, status.Errorf(codes.InvalidArgument, "name and version are required")
	}
	return s.get(ctx, key(req.GetName(), req.GetVersion()))
}

func (s *Service) get(ctx context.Context, k string) (*extv1.GetResponse, error) {
	kv, err := s.st.Get(ctx, k)
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "no package %s", strings.Replace(strings.TrimPrefix(k, Prefix), "/", "@", 1))
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read %s: %v", k, err)
	}
	var rec extv1.GetResponse
	if err := proto.Unmarshal(kv.Value, &rec); err != nil {
		return nil, status.Error(codes.Internal, fmt.Sprintf("stored package %s: %v", k, err))
	}
	return &rec, nil
}

// resolveTimeout bounds one package lookup during translation.
const resolveTimeout = 10 * time.Second

// Resolver returns what translate.Options.Packages wants: the stored bytes
// of name@version from st.
func Resolver(st store.Store) func(name, version string) ([]byte, error) {
	s := New(st, nil)
	return func(name, version string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
		defer cancel()
		rec, err := s.Get(ctx, &extv1.GetRequest{Name: name, Version: version})
		if err != nil {
			if st, ok := status.FromError(err); ok {
				return nil, fmt.Errorf("package store: %s", st.Message())
			}
			return nil, fmt.Errorf("package store: %w", err)
		}
		return rec.GetPackage(), nil
	}
}
