package runtime

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// TestSeveralAccessLogsEachGetTheRecord: a connection manager with two
// access logs writes each request's record to both, as Envoy does (not only
// to the last one configured).
func TestSeveralAccessLogsEachGetTheRecord(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }))
	t.Cleanup(backend.Close)
	dir := t.TempDir()
	first, second := filepath.Join(dir, "first.log"), filepath.Join(dir, "second.log")
	addr := testutil.Addr(t)
	snap := snapshot(t, `
listeners:
  - name: web
    address: `+addr+`
    protocol: http
    access_log: { path: `+first+` }
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { path_prefix: / }
            cluster: backend
clusters:
  - { name: backend, endpoints: [`+strings.TrimPrefix(backend.URL, "http://")+`] }
`)
	// The user config names one log per listener; xDS may carry several.
	f := snap.Listeners[0].GetFilterChains()[0].GetFilters()
	hcmAny := f[len(f)-1].GetTypedConfig()
	hcm := &hcmv3.HttpConnectionManager{}
	if err := hcmAny.UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	if len(hcm.AccessLog) != 1 {
		t.Fatalf("translated listener has %d access logs, want 1", len(hcm.AccessLog))
	}
	more, err := anypb.New(&filev3.FileAccessLog{Path: second})
	if err != nil {
		t.Fatal(err)
	}
	hcm.AccessLog = append(hcm.AccessLog, &accesslogv3.AccessLog{Name: "envoy.access_loggers.file",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: more}})
	if err := hcmAny.MarshalFrom(hcm); err != nil {
		t.Fatal(err)
	}

	rt := newRuntime(t)
	if err := rt.Apply(snap, "test"); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/logged")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, path := range []string{first, second} {
		testutil.Eventually(t, 5*time.Second, 10*time.Millisecond, filepath.Base(path)+" records the request", func() (bool, string) {
			b, _ := os.ReadFile(path)
			return strings.Contains(string(b), `"path":"/logged"`), string(b)
		})
	}
}
