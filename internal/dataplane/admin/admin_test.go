package admin

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters"
	"github.com/omnirelay/omnirelay/internal/dataplane/runtime"
	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/translate"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// serve starts an admin server on 127.0.0.1:0 over a runtime with nothing
// applied; both stop at the end of the test.
func serve(t *testing.T) (*Server, *runtime.Runtime, string) {
	t.Helper()
	reg, err := filter.NewRegistry(filters.Builtins()...)
	if err != nil {
		t.Fatal(err)
	}
	rt := runtime.New(runtime.Options{Log: quiet, Filters: reg, DrainTimeout: time.Second})
	s, err := Listen("127.0.0.1:0", rt, quiet)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := rt.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return s, rt, "http://" + s.Addr().String()
}

// apply runs a config with an http listener web on a free port and two
// clusters (b's endpoints listed out of order).
func apply(t *testing.T, rt *runtime.Runtime) string {
	t.Helper()
	addr := testutil.Addr(t)
	c, err := config.Parse("admin.yaml", []byte(`
listeners:
  - name: web
    address: `+addr+`
    virtual_hosts:
      - { name: all, domains: ["*"], routes: [{ match: { path_prefix: / }, cluster: b }] }
clusters:
  - { name: b, protocol: h2c, endpoints: [127.0.0.1:9002, 127.0.0.1:9001] }
  - { name: a, endpoints: [127.0.0.1:9003] }
`))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := translate.Translate(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Apply(snap, "test:1"); err != nil {
		t.Fatal(err)
	}
	return addr
}

func get(t *testing.T, method, url string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("content-type"), string(b)
}

func TestReadyAndHealth(t *testing.T) {
	s, rt, base := serve(t)
	if code, _, body := get(t, "GET", base+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	if code, _, body := get(t, "GET", base+"/ready"); code != 503 || !strings.Contains(body, "no config applied yet") {
		t.Fatalf("/ready before a config = %d %q, want 503 no config", code, body)
	}
	apply(t, rt)
	v := rt.Current()
	want := "ready: version " + v.ID + " from test:1\n"
	if code, _, body := get(t, "GET", base+"/ready"); code != 200 || body != want {
		t.Fatalf("/ready = %d %q, want 200 %q", code, body, want)
	}
	detail := ""
	s.ReadyDetail = func() string { return detail }
	if _, _, body := get(t, "GET", base+"/ready"); body != want {
		t.Fatalf("/ready with an empty detail = %q, want %q", body, want)
	}
	detail = "last-known-good; control plane unreachable"
	if code, _, body := get(t, "GET", base+"/ready"); code != 200 || body != "ready (last-known-good; control plane unreachable): version "+v.ID+" from test:1\n" {
		t.Fatalf("/ready with a detail = %d %q", code, body)
	}
	s.SetDraining()
	if code, _, body := get(t, "GET", base+"/ready"); code != 503 || !strings.Contains(body, "draining") {
		t.Fatalf("/ready while draining = %d %q, want 503 draining", code, body)
	}
	// Liveness is not readiness: a draining proxy is alive.
	if code, _, _ := get(t, "GET", base+"/healthz"); code != 200 {
		t.Fatalf("/healthz while draining = %d", code)
	}
}

func TestConfigDump(t *testing.T) {
	_, rt, base := serve(t)
	if code, _, _ := get(t, "GET", base+"/config_dump"); code != 503 {
		t.Fatalf("/config_dump before a config = %d, want 503", code)
	}
	apply(t, rt)
	code, ct, body := get(t, "GET", base+"/config_dump")
	if code != 200 || ct != "application/json" {
		t.Fatalf("/config_dump = %d %s", code, ct)
	}
	want, err := rt.Current().Resources.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if body != string(want) {
		t.Fatalf("/config_dump is not the running snapshot:\n%s\nwant\n%s", body, want)
	}
	if !json.Valid([]byte(body)) || !strings.Contains(body, `"web"`) {
		t.Fatalf("/config_dump is not JSON naming listener web: %s", body)
	}
}

func TestClustersAndListeners(t *testing.T) {
	_, rt, base := serve(t)
	for _, path := range []string{"/clusters", "/listeners"} {
		if code, _, body := get(t, "GET", base+path); code != 200 || !strings.Contains(body, "[]") {
			t.Fatalf("%s before a config = %d %q, want an empty list", path, code, body)
		}
	}
	addr := apply(t, rt)

	code, ct, body := get(t, "GET", base+"/clusters")
	if code != 200 || ct != "application/json" {
		t.Fatalf("/clusters = %d %s", code, ct)
	}
	var cs struct {
		Clusters []struct {
			Name      string            `json:"name"`
			Protocol  string            `json:"protocol"`
			Endpoints []json.RawMessage `json:"endpoints"`
		} `json:"clusters"`
	}
	if err := json.Unmarshal([]byte(body), &cs); err != nil {
		t.Fatalf("/clusters: %v: %s", err, body)
	}
	if len(cs.Clusters) != 2 || cs.Clusters[0].Name != "a" || cs.Clusters[1].Name != "b" {
		t.Fatalf("/clusters = %s, want a then b", body)
	}
	if cs.Clusters[1].Protocol != "http2" || len(cs.Clusters[1].Endpoints) != 2 || len(cs.Clusters[0].Endpoints) != 1 {
		t.Fatalf("/clusters = %s, want b http2 with 2 endpoints, a with 1", body)
	}
	if !strings.Contains(body, "127.0.0.1:9001") || !strings.Contains(body, "127.0.0.1:9003") {
		t.Fatalf("/clusters does not list the endpoints: %s", body)
	}

	code, _, body = get(t, "GET", base+"/listeners")
	var ls struct {
		Listeners []struct{ Name, Address string } `json:"listeners"`
	}
	if err := json.Unmarshal([]byte(body), &ls); err != nil || code != 200 {
		t.Fatalf("/listeners = %d %q (%v)", code, body, err)
	}
	if len(ls.Listeners) != 1 || ls.Listeners[0].Name != "web" || ls.Listeners[0].Address != addr {
		t.Fatalf("/listeners = %s, want web on %s", body, addr)
	}
}

func TestMetrics(t *testing.T) {
	_, rt, base := serve(t)
	apply(t, rt)
	code, _, body := get(t, "GET", base+"/metrics")
	if code != 200 || !strings.Contains(body, `omnirelay_config_reloads_total{result="applied"} 1`) {
		t.Fatalf("/metrics = %d, want the applied reload counted:\n%s", code, body)
	}
}

func TestDrain(t *testing.T) {
	s, rt, base := serve(t)
	apply(t, rt)
	drained := make(chan struct{})
	s.OnDrain = func() { close(drained) }
	if code, _, _ := get(t, "GET", base+"/drain"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /drain = %d, want 405 (only POST drains)", code)
	}
	if code, _, _ := get(t, "GET", base+"/ready"); code != 200 {
		t.Fatalf("/ready after GET /drain = %d, want 200", code)
	}
	if code, _, body := get(t, "POST", base+"/drain"); code != 200 || body != "draining\n" {
		t.Fatalf("POST /drain = %d %q", code, body)
	}
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
		t.Fatal("POST /drain did not call OnDrain")
	}
	if code, _, _ := get(t, "GET", base+"/ready"); code != 503 {
		t.Fatalf("/ready after POST /drain = %d, want 503", code)
	}
}

// Shutdown closes the listener of a server that never served, so that a
// proxy whose start fails after binding the admin address releases it.
func TestShutdownWithoutServe(t *testing.T) {
	reg, err := filter.NewRegistry(filters.Builtins()...)
	if err != nil {
		t.Fatal(err)
	}
	rt := runtime.New(runtime.Options{Log: quiet, Filters: reg})
	addr := testutil.Addr(t)
	s, err := Listen(addr, rt, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	again, err := Listen(addr, rt, quiet)
	if err != nil {
		t.Fatalf("address still bound after Shutdown: %v", err)
	}
	_ = again.Shutdown(context.Background())
}
