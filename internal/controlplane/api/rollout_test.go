package api

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeRollouts records the calls and answers like MeshKit: a canary is
// required for promote and rollback.
type fakeRollouts struct {
	mu     sync.Mutex
	canary map[string]string // extension -> canary package
	calls  []string
}

func (f *fakeRollouts) record(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func (f *fakeRollouts) Canary(_ context.Context, name, pkg string, percent uint32, by string) (string, []string, error) {
	f.record(name + " canary " + pkg + " " + by)
	if name != "stamp" {
		return "", nil, status.Errorf(codes.NotFound, "extension %q: no such extension", name)
	}
	f.mu.Lock()
	f.canary[name] = pkg
	f.mu.Unlock()
	return "v-canary", []string{"listeners[0].filters[0].extension"}, nil
}

func (f *fakeRollouts) end(name, step string) (string, []string, error) {
	f.record(name + " " + step)
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.canary[name]; !ok {
		return "", nil, status.Errorf(codes.FailedPrecondition, "extension %q: no canary to %s", name, step)
	}
	delete(f.canary, name)
	return "v-" + step, []string{"listeners[0].filters[0].extension"}, nil
}

func (f *fakeRollouts) Promote(_ context.Context, name string) (string, []string, error) {
	return f.end(name, "promote")
}

func (f *fakeRollouts) Rollback(_ context.Context, name string) (string, []string, error) {
	return f.end(name, "rollback")
}

func TestRolloutGateway(t *testing.T) {
	ro := &fakeRollouts{canary: map[string]string{}}
	srv := httptest.NewServer(New(Options{Rollouts: ro}).HTTPHandler())
	defer srv.Close()
	steps := []struct {
		name, method, path, body string
		status                   int
		contains                 string
	}{
		{name: "promote without canary", method: "POST", path: "/v1/extensions/stamp/promote", status: 400, contains: `"code":"FAILED_PRECONDITION"`},
		{name: "canary", method: "POST", path: "/v1/extensions/stamp/canary", body: `{"package": "store:stamp@2", "percent": 50, "by": "proxies"}`,
			status: 200, contains: `"entries":["listeners[0].filters[0].extension"]`},
		{name: "canary of another name in the body", method: "POST", path: "/v1/extensions/stamp/canary", body: `{"extension": "other", "package": "store:x@1"}`,
			status: 400, contains: `names extension \"other\"`},
		{name: "canary of an unknown extension", method: "POST", path: "/v1/extensions/nope/canary", body: `{"package": "store:x@1"}`,
			status: 404, contains: `"code":"NOT_FOUND"`},
		{name: "canary with an unknown field", method: "POST", path: "/v1/extensions/stamp/canary", body: `{"pkg": "store:x@1"}`,
			status: 400, contains: "pkg"},
		{name: "wrong method", method: "GET", path: "/v1/extensions/stamp/rollback", status: 405},
		{name: "rollback", method: "POST", path: "/v1/extensions/stamp/rollback", status: 200, contains: `"version":"v-rollback"`},
		{name: "rollback again", method: "POST", path: "/v1/extensions/stamp/rollback", status: 400, contains: "no canary to rollback"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			req, err := http.NewRequest(st.method, srv.URL+st.path, strings.NewReader(st.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != st.status || !strings.Contains(string(body), st.contains) {
				t.Fatalf("%s %s: %d %s; want %d containing %q", st.method, st.path, resp.StatusCode, body, st.status, st.contains)
			}
		})
	}
	if got := strings.Join(ro.calls, "; "); got != "stamp promote; stamp canary store:stamp@2 proxies; nope canary store:x@1 ; stamp rollback; stamp rollback" {
		t.Fatalf("calls: %s", got)
	}
}

func TestRolloutUnimplemented(t *testing.T) {
	_, err := rolloutService{s: New(Options{})}.Promote(context.Background(), nil)
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("err = %v, want UNIMPLEMENTED", err)
	}
}
