package wasm_test

import (
	"crypto/ed25519"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/app"
	"github.com/omnirelay/omnirelay/internal/dataplane/wasm"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/shared/signing"

	"github.com/omnirelay/omnirelay/internal/testutil"
	"github.com/omnirelay/omnirelay/internal/testutil/proxytest"
)

func key() ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(3 * i)
	}
	return ed25519.NewKeyFromSeed(seed)
}

// writePackage packs and signs a guest as omnictl ext pack/sign do.
func writePackage(t *testing.T, dir, name, pkg string, abi string) {
	t.Helper()
	b, err := extpkg.Pack(extpkg.Manifest{Name: name, Version: "1.0.0", Kind: extpkg.KindWasm, ABI: abi}, wasm.Guest(t, pkg))
	if err != nil {
		t.Fatal(err)
	}
	if b, err = extpkg.Sign(b, signing.NewSigner(key())); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".orx"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// echo answers with the x-added header it saw.
func echo(t *testing.T) string {
	t.Helper()
	return testutil.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "x-added=%s", r.Header.Get("x-added"))
	}))
}

// auth is the http-callout example's authorization service.
func auth(t *testing.T) string {
	t.Helper()
	return testutil.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer good" {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
}

// Deadlines are generous where the plugin should succeed: a burst of
// concurrent streams waits for new instances (milliseconds each, far more
// under the race detector).
const proxyConfig = `
admin: { address: {{admin}} }
listeners:
  - name: add
    address: {{add}}
    filters:
      - extension: { name: add-header, package: add-header.orx, config: "x-added: from-wasm", deadline: 2s }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: main }] }]
  - name: deny
    address: {{deny}}
    filters:
      - extension: { name: deny-by-header, package: deny-by-header.orx, config: "x-block", deadline: 2s }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: main }] }]
  - name: loop-open
    address: {{loopopen}}
    filters:
      - extension: { name: loop-open, package: guest.orx, config: loop, policy: fail_open, deadline: 20ms }
      - extension: { name: add-header, package: add-header.orx, config: "x-added: after-loop", deadline: 2s }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: main }] }]
  - name: callout
    address: {{callout}}
    filters:
      - extension: { name: http-callout, package: http-callout.orx, config: "upstream: auth", deadline: 2s }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: main }] }]
  - name: panic-reload
    address: {{panicreload}}
    filters:
      - extension: { name: panic-reload, package: guest.orx, config: panic, policy: reload, fallback: fail_open, deadline: 2s }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: main }] }]
  - name: oom-closed
    address: {{oomclosed}}
    filters:
      - extension: { name: oom-closed, package: guest.orx, config: oom, policy: fail_closed, fail_status: 507, deadline: 2s }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: main }] }]
clusters:
  - { name: main, endpoints: [{{main}}] }
  - { name: auth, endpoints: [{{auth}}] }
`

// TestThroughProxy runs the example plugins and misbehaving guests in a
// real OmniRelay: config file, signed packages, trust root, listeners.
func TestThroughProxy(t *testing.T) {
	dir := t.TempDir()
	writePackage(t, dir, "add-header", wasm.GuestAdd, wasm.ABI021)
	writePackage(t, dir, "deny-by-header", wasm.GuestDeny, wasm.ABI021)
	writePackage(t, dir, "guest", wasm.GuestTest, wasm.ABI021)
	writePackage(t, dir, "http-callout", wasm.GuestCallout, wasm.ABI021)
	trust := filepath.Join(dir, "trust.pem")
	if err := signing.WritePublicKey(trust, key().Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	addrs := map[string]string{"add": testutil.Addr(t), "deny": testutil.Addr(t), "loopopen": testutil.Addr(t), "oomclosed": testutil.Addr(t), "callout": testutil.Addr(t), "panicreload": testutil.Addr(t)}
	admin := testutil.Addr(t)
	r := strings.NewReplacer("{{admin}}", admin, "{{main}}", echo(t), "{{auth}}", auth(t), "{{callout}}", addrs["callout"], "{{panicreload}}", addrs["panicreload"],
		"{{add}}", addrs["add"], "{{deny}}", addrs["deny"], "{{loopopen}}", addrs["loopopen"], "{{oomclosed}}", addrs["oomclosed"])
	proxytest.StartIn(t, dir, r.Replace(proxyConfig), func(o *app.Options) {
		o.ExtensionTrustRoot, o.AdminAddress, o.DrainTimeout, o.PollInterval = trust, admin, time.Second, time.Hour
	})

	tests := []struct {
		name     string
		listener string
		hdr      map[string]string
		status   int
		body     string
	}{
		{name: "add-header", listener: "add", status: 200, body: "x-added=from-wasm"},
		{name: "deny-by-header lets through", listener: "deny", status: 200, body: "x-added="},
		{name: "deny-by-header denies", listener: "deny", hdr: map[string]string{"x-block": "1"}, status: 403, body: "denied by deny-by-header"},
		{name: "infinite loop under fail_open is skipped", listener: "loopopen", status: 200, body: "x-added=after-loop"},
		{name: "http-callout allows", listener: "callout", hdr: map[string]string{"authorization": "Bearer good"}, status: 200, body: "x-added="},
		{name: "http-callout denies", listener: "callout", hdr: map[string]string{"authorization": "Bearer bad"}, status: 403, body: "denied by the authorization service"},
		{name: "panic under reload falls back to fail_open", listener: "panicreload", status: 200, body: "x-added="},
		{name: "memory blow-up under fail_closed", listener: "oomclosed", status: 507},
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Concurrent requests: each needs its own instance from the pool,
			// and none may be lost beyond what the policy says.
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for i := 0; i < 8; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req, _ := http.NewRequest("GET", "http://"+addrs[tt.listener]+"/", nil)
					for k, v := range tt.hdr {
						req.Header.Set(k, v)
					}
					resp, err := client.Do(req)
					if err != nil {
						errs <- err
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != tt.status || (tt.body != "" && strings.TrimSpace(string(b)) != tt.body) {
						errs <- fmt.Errorf("got %d %q, want %d %q", resp.StatusCode, b, tt.status, tt.body)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}

	t.Run("metrics", func(t *testing.T) {
		resp, err := client.Get("http://" + admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{
			`omnirelay_wasm_counter{name="add_header_requests",plugin="add-header"}`,
			`omnirelay_extension_calls_total{extension="loop-open",kind="wasm",outcome="timeout"} 8`,
		} {
			if !strings.Contains(string(b), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		// A guest running out of memory exits (error), or is still
		// allocating when its deadline passes (timeout): 8 failures either way.
		failed := 0
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, `omnirelay_extension_calls_total{extension="oom-closed"`) && !strings.Contains(l, `outcome="ok"`) {
				n, _ := strconv.Atoi(l[strings.LastIndexByte(l, ' ')+1:])
				failed += n
			}
		}
		if failed != 8 {
			t.Errorf("oom-closed failed calls = %d, want 8", failed)
		}
	})
}
