package api

import (
	"context"
	"net/http"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/omnirelay/omnirelay/internal/controlplane/versions"
	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

// VersionService is the config history, an optional ability of a
// ConfigService (found by type assertion; without it the history calls
// answer UNIMPLEMENTED and Apply answers no version number). Errors are
// mapped like ConfigService's. Methods are called concurrently from request
// goroutines.
type VersionService interface {
	// ApplyVersion is Apply that also answers the version number.
	ApplyVersion(ctx context.Context, filename string, yaml []byte) (*meshkitv1.ApplyResponse, error)
	// Current answers Get with the version number.
	Current(ctx context.Context) (*meshkitv1.GetConfigResponse, error)
	History(ctx context.Context) (*meshkitv1.HistoryResponse, error)
	Version(ctx context.Context, number int64) (*meshkitv1.ConfigVersion, error)
	Diff(ctx context.Context, from, to int64) (*meshkitv1.DiffResponse, error)
	Undo(ctx context.Context, to int64) (*meshkitv1.ApplyResponse, error)
}

// AuthorMetadata is the gRPC metadata key, and AuthorHeader the HTTP
// header, by which a caller names itself for the config history. It is
// declared, not authenticated (the API's one credential is a shared token).
const (
	AuthorMetadata = "omnirelay-author"
	AuthorHeader   = "Omnirelay-Author"
)

// withAuthor carries the caller's declared author to the config service.
func withAuthor(ctx context.Context) context.Context {
	if versions.AuthorFrom(ctx) != "" {
		return ctx // set by the gateway
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(AuthorMetadata); len(v) > 0 && v[0] != "" {
			return versions.WithAuthor(ctx, v[0])
		}
	}
	return ctx
}

func (c configService) versions() (VersionService, error) {
	vs, ok := c.s.cfg.(VersionService)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this MeshKit keeps no config history")
	}
	return vs, nil
}

func (c configService) History(ctx context.Context, _ *meshkitv1.HistoryRequest) (*meshkitv1.HistoryResponse, error) {
	vs, err := c.versions()
	if err != nil {
		return nil, err
	}
	resp, err := vs.History(ctx)
	return resp, mapErr(err)
}

func (c configService) GetVersion(ctx context.Context, req *meshkitv1.GetVersionRequest) (*meshkitv1.ConfigVersion, error) {
	vs, err := c.versions()
	if err != nil {
		return nil, err
	}
	if req.GetNumber() <= 0 {
		return nil, status.Errorf(codes.InvalidArgument, "number: %d is not a version number (1, 2, ...)", req.GetNumber())
	}
	resp, err := vs.Version(ctx, req.GetNumber())
	return resp, mapErr(err)
}

func (c configService) Diff(ctx context.Context, req *meshkitv1.DiffRequest) (*meshkitv1.DiffResponse, error) {
	vs, err := c.versions()
	if err != nil {
		return nil, err
	}
	if req.GetFrom() < 0 || req.GetTo() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "from %d, to %d: version numbers are 1 or more (0: the default)", req.GetFrom(), req.GetTo())
	}
	resp, err := vs.Diff(ctx, req.GetFrom(), req.GetTo())
	return resp, mapErr(err)
}

func (c configService) Undo(ctx context.Context, req *meshkitv1.UndoRequest) (*meshkitv1.ApplyResponse, error) {
	vs, err := c.versions()
	if err != nil {
		return nil, err
	}
	if req.GetTo() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "to: %d is not a version number (1, 2, ...; 0: the one before the current)", req.GetTo())
	}
	resp, err := vs.Undo(withAuthor(ctx), req.GetTo())
	if err != nil {
		c.s.log.Info("undo refused", "to", req.GetTo(), "err", err)
		return nil, toStatus(err)
	}
	c.s.log.Info("config undone", "to", req.GetTo(), "number", resp.GetNumber(), "version", resp.GetVersion())
	return resp, nil
}

func mapErr(err error) error {
	if err == nil {
		return nil
	}
	return toStatus(err)
}

// routeVersions adds the config history routes to the gateway:
//
//	GET  /v1/config/versions              HistoryResponse
//	GET  /v1/config/versions/{number}     ConfigVersion (with its yaml)
//	GET  /v1/config/diff?from=N&to=M      DiffResponse (to: current, from: its parent by default)
//	POST /v1/config/undo                  body (optional): {"to": N} → ApplyResponse
func (s *Server) routeVersions(mux *http.ServeMux) {
	cfg := configService{s: s}
	mux.Handle("/v1/config/versions", methods(map[string]http.HandlerFunc{
		http.MethodGet: func(w http.ResponseWriter, r *http.Request) {
			respond(w)(cfg.History(r.Context(), &meshkitv1.HistoryRequest{}))
		},
	}))
	mux.Handle("/v1/config/versions/{number}", methods(map[string]http.HandlerFunc{
		http.MethodGet: func(w http.ResponseWriter, r *http.Request) {
			n, err := strconv.ParseInt(r.PathValue("number"), 10, 64)
			if err != nil {
				writeError(w, status.Errorf(codes.InvalidArgument, "path: version number %q: want an integer", r.PathValue("number")))
				return
			}
			respond(w)(cfg.GetVersion(r.Context(), &meshkitv1.GetVersionRequest{Number: n}))
		},
	}))
	mux.Handle("/v1/config/diff", methods(map[string]http.HandlerFunc{
		http.MethodGet: func(w http.ResponseWriter, r *http.Request) {
			req := &meshkitv1.DiffRequest{}
			for _, p := range []struct {
				name string
				dst  *int64
			}{{"from", &req.From}, {"to", &req.To}} {
				v := r.URL.Query().Get(p.name)
				if v == "" {
					continue
				}
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					writeError(w, status.Errorf(codes.InvalidArgument, "query %s=%q: want a version number", p.name, v))
					return
				}
				*p.dst = n
			}
			respond(w)(cfg.Diff(r.Context(), req))
		},
	}))
	mux.Handle("/v1/config/undo", methods(map[string]http.HandlerFunc{
		http.MethodPost: func(w http.ResponseWriter, r *http.Request) {
			req := &meshkitv1.UndoRequest{}
			if err := readJSON(w, r, req, true); err != nil {
				writeError(w, err)
				return
			}
			respond(w)(cfg.Undo(gatewayAuthor(r), req))
		},
	}))
}

// gatewayAuthor is the request's context carrying its Omnirelay-Author.
func gatewayAuthor(r *http.Request) context.Context {
	if a := r.Header.Get(AuthorHeader); a != "" {
		return versions.WithAuthor(r.Context(), a)
	}
	return r.Context()
}
