package extension_test

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/app"
	"github.com/omnirelay/omnirelay/internal/shared/dslrules"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/shared/signing"

	"github.com/omnirelay/omnirelay/internal/testutil"
	"github.com/omnirelay/omnirelay/internal/testutil/proxytest"
)

// versionRules is a DSL package that stamps x-version on every response.
func versionRules(v string) string {
	return "rules:\n- name: version\n  phase: response\n  actions: [{set_header: {name: x-version, value: \"" + v + "\"}}]\n"
}

const canaryConfig = `
admin: { address: {{admin}} }
listeners:
  - name: edge
    address: {{edge}}
    filters:
      - extension:
          name: stamp
          package: {{package}}
          policy: fail_closed
          deadline: 1s
{{canary}}
    virtual_hosts:
      - { name: all, routes: [{ match: { path_prefix: / }, cluster: main }] }
clusters:
  - { name: main, endpoints: [{{main}}] }
`

// TestCanaryPromoteRollbackThroughProxy changes the extension of a running
// OmniRelay under steady load: v1, then v2 as a 50% canary beside v1, then
// v2 promoted, then rolled back to v1, then a tampered and an untrusted
// package, which are refused (the log says why) while v1 keeps serving.
// Every request must succeed, and each stage must be seen to serve what it
// says.
func TestCanaryPromoteRollbackThroughProxy(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []string{"1", "2"} {
		b, err := extpkg.Pack(extpkg.Manifest{Name: "stamp", Version: v + ".0.0", Kind: extpkg.KindDSL, ABI: dslrules.ABI}, []byte(versionRules(v)))
		if err != nil {
			t.Fatal(err)
		}
		_, priv := testKey(1)
		if b, err = extpkg.Sign(b, signing.NewSigner(priv)); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "v"+v+".orx"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Refused packages: v2's payload edited after signing, and v2 signed by
	// a key the proxy does not trust.
	v2, err := os.ReadFile(filepath.Join(dir, "v2.orx"))
	if err != nil {
		t.Fatal(err)
	}
	tampered := []byte(strings.Replace(string(v2), `value: "2"`, `value: "X"`, 1))
	if err := os.WriteFile(filepath.Join(dir, "tampered.orx"), tampered, 0o644); err != nil {
		t.Fatal(err)
	}
	_, otherKey := testKey(9)
	untrusted, err := extpkg.Sign(v2, signing.NewSigner(otherKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "untrusted.orx"), untrusted, 0o644); err != nil {
		t.Fatal(err)
	}
	pub, _ := testKey(1)
	trust := filepath.Join(dir, "trust.pem")
	if err := signing.WritePublicKey(trust, pub); err != nil {
		t.Fatal(err)
	}
	main := testutil.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))

	edge := testutil.Addr(t)
	base := strings.NewReplacer("{{admin}}", testutil.Addr(t), "{{edge}}", edge, "{{main}}", main)
	render := func(pkg, canary string) string {
		return strings.NewReplacer("{{package}}", pkg, "{{canary}}", canary).Replace(base.Replace(canaryConfig))
	}
	logs := &lockedBuffer{}
	p := proxytest.StartIn(t, dir, render("v1.orx", ""), func(o *app.Options) {
		o.ExtensionTrustRoot, o.Log = trust, slog.New(slog.NewTextHandler(logs, nil))
		o.DrainTimeout, o.PollInterval = time.Second, 10*time.Millisecond
	})
	write := func(pkg, canary string) {
		t.Helper()
		p.Rewrite(t, render(pkg, canary))
	}

	// Steady load; each response's x-version goes to the current window.
	var (
		mu       sync.Mutex
		window   = map[string]int{}
		failures []string
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer client.CloseIdleConnections()
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				resp, err := client.Get("http://" + edge + "/")
				mu.Lock()
				if err != nil {
					failures = append(failures, err.Error())
				} else {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						failures = append(failures, fmt.Sprint(resp.StatusCode))
					}
					window[resp.Header.Get("x-version")]++
				}
				mu.Unlock()
			}
		})
	}
	// await polls windows of traffic until one satisfies ok.
	await := func(stage string, ok func(w map[string]int) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			clear(window)
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
			mu.Lock()
			w := maps.Clone(window)
			mu.Unlock()
			if w["1"]+w["2"] >= 20 && ok(w) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: last window %v", stage, w)
			}
		}
	}
	await("v1", func(w map[string]int) bool { return w["2"] == 0 && w[""] == 0 })
	write("v2.orx", "          canary: { percent: 50, previous_package: v1.orx }")
	await("canary", func(w map[string]int) bool {
		return w[""] == 0 && w["1"] > 0 && w["2"] > 0 && w["1"]*3 > w["2"] && w["2"]*3 > w["1"]
	})
	write("v2.orx", "")
	await("promoted", func(w map[string]int) bool { return w["1"] == 0 && w[""] == 0 })
	write("v1.orx", "")
	await("rolled back", func(w map[string]int) bool { return w["2"] == 0 && w[""] == 0 })
	// Bad packages are refused at load, with the reason in the log, and
	// v1 keeps serving.
	for _, bad := range []struct{ file, reason string }{
		{"tampered.orx", "does not match the manifest's sha256"},
		{"untrusted.orx", "untrusted key"},
	} {
		write(bad.file, "")
		testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, bad.file+": a refusal naming "+bad.reason+" in the log", func() (bool, string) {
			l := logs.String()
			return strings.Contains(l, bad.reason), "log:\n" + l
		})
		await(bad.file+" refused", func(w map[string]int) bool { return w["2"] == 0 && w["X"] == 0 && w[""] == 0 })
	}
	stop.Store(true)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d requests failed across the changes: %v", len(failures), failures[:min(5, len(failures))])
	}
}

// lockedBuffer is a log destination shared by the proxy's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
