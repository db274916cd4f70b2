package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

// Body limits: a config is YAML text, everything else a small JSON message.
const (
	maxConfigBody = 8 << 20
	maxJSONBody   = 1 << 20
)

// VersionHeader carries the config version on GET /v1/config answered in
// YAML.
const VersionHeader = "Omnirelay-Config-Version"

// HTTPHandler returns the JSON/HTTP gateway. Messages are protojson with the
// proto field names (snake_case; camelCase is accepted on input, unknown
// fields are errors). Errors are {"code": "NOT_FOUND", "message": "..."}
// with the gRPC code's name and its usual HTTP status.
//
//	POST   /v1/config                                  body: YAML; ?filename= names it in errors
//	GET    /v1/config                                  YAML (version in Omnirelay-Config-Version),
//	                                                   or GetConfigResponse with Accept: application/json
//	GET    /v1/services                                ListServicesResponse
//	GET    /v1/services/{service}/endpoints            ListEndpointsResponse
//	POST   /v1/services/{service}/endpoints            body: Endpoint → RegisterResponse
//	PUT    /v1/services/{service}/endpoints/{id}/heartbeat   body (optional): {ttl, health} → HeartbeatResponse
//	DELETE /v1/services/{service}/endpoints/{id}       DeregisterResponse
//	GET    /v1/config/versions, /v1/config/versions/{n}, /v1/config/diff; POST /v1/config/undo (versions.go)
//	GET    /v1/rollout; POST /v1/rollout, /v1/rollout/{action} (configrollout.go)
//	GET    /v1/proxies                                 ListProxiesResponse
//	POST   /v1/extensions/{extension}/canary           body: CanaryRequest → RolloutResponse
//	POST   /v1/extensions/{extension}/promote          RolloutResponse
//	POST   /v1/extensions/{extension}/rollback         RolloutResponse
func (s *Server) HTTPHandler() http.Handler {
	reg := registryService{s: s}
	cfg := configService{s: s}
	prx := proxiesService{s: s}
	mux := http.NewServeMux()
	route := func(pattern string, byMethod map[string]http.HandlerFunc) {
		mux.Handle(pattern, methods(byMethod))
	}
	route("/v1/config", map[string]http.HandlerFunc{
		http.MethodPost: func(w http.ResponseWriter, r *http.Request) {
			body, err := readBody(w, r, maxConfigBody)
			if err != nil {
				writeError(w, err)
				return
			}
			filename := r.URL.Query().Get("filename")
			respond(w)(cfg.Apply(gatewayAuthor(r), &meshkitv1.ApplyRequest{Filename: filename, Yaml: body}))
		},
		http.MethodGet: func(w http.ResponseWriter, r *http.Request) {
			resp, err := cfg.Get(r.Context(), &meshkitv1.GetConfigRequest{})
			if err != nil || wantsJSON(r) {
				respond(w)(resp, err)
				return
			}
			w.Header().Set("Content-Type", "application/yaml")
			w.Header().Set(VersionHeader, resp.GetVersion())
			_, _ = w.Write(resp.GetYaml())
		},
	})
	route("/v1/services", map[string]http.HandlerFunc{
		http.MethodGet: func(w http.ResponseWriter, r *http.Request) {
			respond(w)(reg.ListServices(r.Context(), &meshkitv1.ListServicesRequest{}))
		},
	})
	route("/v1/services/{service}/endpoints", map[string]http.HandlerFunc{
		http.MethodGet: func(w http.ResponseWriter, r *http.Request) {
			respond(w)(reg.ListEndpoints(r.Context(), &meshkitv1.ListEndpointsRequest{Service: r.PathValue("service")}))
		},
		http.MethodPost: func(w http.ResponseWriter, r *http.Request) {
			ep := &meshkitv1.Endpoint{}
			if err := readJSON(w, r, ep, false); err != nil {
				writeError(w, err)
				return
			}
			svc := r.PathValue("service")
			if ep.GetService() != "" && ep.GetService() != svc {
				writeError(w, status.Errorf(codes.InvalidArgument, "endpoint names service %q but the path names %q", ep.GetService(), svc))
				return
			}
			ep.Service = svc
			respond(w)(reg.Register(r.Context(), &meshkitv1.RegisterRequest{Endpoint: ep}))
		},
	})
	route("/v1/services/{service}/endpoints/{id}", map[string]http.HandlerFunc{
		http.MethodDelete: func(w http.ResponseWriter, r *http.Request) {
			respond(w)(reg.Deregister(r.Context(), &meshkitv1.DeregisterRequest{Service: r.PathValue("service"), Id: r.PathValue("id")}))
		},
	})
	route("/v1/services/{service}/endpoints/{id}/heartbeat", map[string]http.HandlerFunc{
		http.MethodPut: func(w http.ResponseWriter, r *http.Request) {
			req := &meshkitv1.HeartbeatRequest{}
			if err := readJSON(w, r, req, true); err != nil {
				writeError(w, err)
				return
			}
			req.Service, req.Id = r.PathValue("service"), r.PathValue("id")
			respond(w)(reg.Heartbeat(r.Context(), req))
		},
	})
	route("/v1/proxies", map[string]http.HandlerFunc{
		http.MethodGet: func(w http.ResponseWriter, r *http.Request) {
			respond(w)(prx.List(r.Context(), &meshkitv1.ListProxiesRequest{}))
		},
	})
	s.routeRollouts(mux)       // rollout.go
	s.routeVersions(mux)       // versions.go
	s.routeConfigRollouts(mux) // configrollout.go
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, status.Errorf(codes.NotFound, "no API route %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// methods dispatches on the method itself so that a wrong method gets a
// JSON error (ServeMux's own 405 is plain text).
func methods(byMethod map[string]http.HandlerFunc) http.Handler {
	allowed := make([]string, 0, len(byMethod))
	for m := range byMethod {
		allowed = append(allowed, m)
	}
	sort.Strings(allowed)
	allow := strings.Join(allowed, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, ok := byMethod[r.Method]
		if !ok {
			w.Header().Set("Allow", allow)
			writeJSONError(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", fmt.Sprintf("%s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow))
			return
		}
		h(w, r)
	})
}

// respond returns a writer for a handler's (message, error) pair, so a
// service call can be passed straight in.
func respond(w http.ResponseWriter) func(proto.Message, error) {
	return func(m proto.Message, err error) {
		if err != nil {
			writeError(w, err)
			return
		}
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		if err != nil {
			writeError(w, status.Errorf(codes.Internal, "encoding the answer: %v", err))
			return
		}
		// protojson varies its whitespace on purpose; compact it so that
		// the same answer is the same bytes for scripts and caches.
		var buf bytes.Buffer
		if err := json.Compact(&buf, b); err != nil {
			writeError(w, status.Errorf(codes.Internal, "encoding the answer: %v", err))
			return
		}
		buf.WriteByte('\n')
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(buf.Bytes())
	}
}

func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, status.Errorf(codes.ResourceExhausted, "request body larger than %d bytes", limit)
	}
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "reading request body: %v", err)
	}
	return b, nil
}

// readJSON decodes a protojson body into m; optional bodies may be empty.
// The Content-Type is not checked: `curl -d` labels JSON as a form, and a
// body that is not JSON fails to parse with a clear error anyway.
func readJSON(w http.ResponseWriter, r *http.Request, m proto.Message, optional bool) error {
	b, err := readBody(w, r, maxJSONBody)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		if optional {
			return nil
		}
		return status.Error(codes.InvalidArgument, "request body is empty; expected a JSON object")
	}
	if err := protojson.Unmarshal(b, m); err != nil {
		return status.Errorf(codes.InvalidArgument, "request body (JSON expected): %v", err)
	}
	return nil
}

func wantsJSON(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "application/json" {
			return true
		}
	}
	return false
}

func writeError(w http.ResponseWriter, err error) {
	st := status.Convert(toStatus(err))
	writeJSONError(w, httpStatus(st.Code()), codeName(st.Code()), st.Message())
}

func writeJSONError(w http.ResponseWriter, httpCode int, code, msg string) {
	b, _ := json.Marshal(struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{code, msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(httpCode)
	_, _ = w.Write(b)
}

// codeName is the canonical upper-case name, as in google.rpc.Code.
func codeName(c codes.Code) string {
	switch c {
	case codes.OK:
		return "OK"
	case codes.Canceled:
		return "CANCELLED"
	case codes.InvalidArgument:
		return "INVALID_ARGUMENT"
	case codes.DeadlineExceeded:
		return "DEADLINE_EXCEEDED"
	case codes.NotFound:
		return "NOT_FOUND"
	case codes.AlreadyExists:
		return "ALREADY_EXISTS"
	case codes.PermissionDenied:
		return "PERMISSION_DENIED"
	case codes.ResourceExhausted:
		return "RESOURCE_EXHAUSTED"
	case codes.FailedPrecondition:
		return "FAILED_PRECONDITION"
	case codes.Aborted:
		return "ABORTED"
	case codes.OutOfRange:
		return "OUT_OF_RANGE"
	case codes.Unimplemented:
		return "UNIMPLEMENTED"
	case codes.Internal:
		return "INTERNAL"
	case codes.Unavailable:
		return "UNAVAILABLE"
	case codes.DataLoss:
		return "DATA_LOSS"
	case codes.Unauthenticated:
		return "UNAUTHENTICATED"
	}
	return "UNKNOWN"
}

// httpStatus follows the mapping of google.rpc.Code's documentation.
func httpStatus(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.Canceled:
		return 499
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
