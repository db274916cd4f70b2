package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/controlplane/serve"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

func historyDoc(n int) string {
	return fmt.Sprintf(`listeners:
  - name: web
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: shop
        routes:
          - match: { path_prefix: /v%d }
            cluster: shop
clusters:
  - name: shop
    endpoints: [127.0.0.1:%d]
`, n, 9000+n)
}

// TestHistoryCommands runs history, diff and undo (and the JSON gateway's
// routes for them) against a real MeshKit on bbolt that follows a config
// file, signs and keeps 3 versions.
func TestHistoryCommands(t *testing.T) {
	dir := t.TempDir()
	_, priv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "signing.key")
	if err := signing.WritePrivateKey(keyFile, priv); err != nil {
		t.Fatal(err)
	}
	followed := filepath.Join(dir, "followed.yaml")
	write := func(name, doc string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("followed.yaml", historyDoc(1))
	p, err := serve.Start(serve.Options{XDSAddress: "127.0.0.1:0", APIAddress: "127.0.0.1:0", DataDir: filepath.Join(dir, "data"),
		SigningKey: keyFile, HistoryKeep: 3, ConfigFile: followed, PollInterval: 20 * time.Millisecond,
		IdentityAddress: "", Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	}()
	addr := p.APIAddr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must := func(args ...string) string {
		t.Helper()
		out, stderr, err := run(ctx, addr, args...)
		if err != nil {
			t.Fatalf("omnictl %s: %v %s", strings.Join(args, " "), err, stderr)
		}
		return out
	}

	// Version 1 came from the followed file; a change of it is version 2.
	write("followed.yaml", historyDoc(2))
	deadline := time.Now().Add(10 * time.Second)
	for p.MeshKit.Current() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the followed file's change made no version 2 (current %d)", p.MeshKit.Current())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if out := must("--author", "alice", "apply", "-f", write("v3.yaml", historyDoc(3))); !strings.Contains(out, "(number 3)") {
		t.Fatalf("apply: %q", out)
	}
	if out := must("apply", "-f", filepath.Join(dir, "v3.yaml")); !strings.HasPrefix(out, "unchanged ") {
		t.Fatalf("apply of the same document: %q", out)
	}
	t.Setenv("OMNICTL_AUTHOR", "carol")
	must("apply", "-f", write("v4.yaml", historyDoc(4)))

	out := must("history")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 { // header + the 3 kept (--history-keep)
		t.Fatalf("history keeps 3:\n%s", out)
	}
	for i, want := range []string{"4*", "3", "2"} {
		f := strings.Fields(lines[i+1])
		if f[0] != want {
			t.Fatalf("row %d is version %s, want %s:\n%s", i, f[0], want, out)
		}
	}
	keyID := signing.KeyID(priv.Public().(ed25519.PublicKey))
	flat := normalize(out)
	for _, want := range []string{"carol apply", "alice apply", "file " + followed + " file", keyID, "cluster shop: endpoints changed"} {
		if !strings.Contains(flat, want) {
			t.Fatalf("history lacks %q:\n%s", want, out)
		}
	}

	out = must("diff", "2", "4")
	for _, want := range []string{"# listener web: virtual_host shop: routes changed", "--- v2 " + followed, "+++ v4 " + filepath.Join(dir, "v4.yaml"),
		"-          - match: { path_prefix: /v2 }", "+    endpoints: [127.0.0.1:9004]"} {
		if !strings.Contains(out, want) {
			t.Fatalf("diff 2 4 lacks %q:\n%s", want, out)
		}
	}
	if out := must("diff"); !strings.Contains(out, "--- v3 ") || !strings.Contains(out, "+++ v4 ") {
		t.Fatalf("diff (current against its parent):\n%s", out)
	}
	if _, _, err := run(ctx, addr, "diff", "1", "4"); err == nil || !strings.Contains(err.Error(), "NotFound: version 1 (the history keeps the last 3)") {
		t.Fatalf("diff with a dropped version: %v", err)
	}
	if _, _, err := run(ctx, addr, "diff", "x"); err == nil || !strings.Contains(err.Error(), `FROM "x": want a version number`) {
		t.Fatalf("diff x: %v", err)
	}

	if out := must("undo"); !strings.Contains(out, "undone: version 5") {
		t.Fatalf("undo: %q", out)
	}
	if doc, _, _ := p.MeshKit.Get(ctx); string(doc) != historyDoc(3) {
		t.Fatalf("after undo:\n%s", doc)
	}
	if out := must("undo", "--to", "4"); !strings.Contains(out, "undone: version 6") {
		t.Fatalf("undo --to 4: %q", out)
	}
	if doc, _, _ := p.MeshKit.Get(ctx); string(doc) != historyDoc(4) {
		t.Fatalf("after undo --to 4:\n%s", doc)
	}
	if _, _, err := run(ctx, addr, "undo", "--to", "2"); err == nil || !strings.Contains(err.Error(), "NotFound: version 2 (the history keeps the last 3)") {
		t.Fatalf("undo to a dropped version: %v", err)
	}
	if _, _, err := run(ctx, addr, "undo", "--to", "6"); err == nil || !strings.Contains(err.Error(), "InvalidArgument: to: version 6 is the current one") {
		t.Fatalf("undo to the current version: %v", err)
	}

	var hist struct {
		Versions []struct {
			Number  string   `json:"number"`
			Origin  string   `json:"origin"`
			Summary []string `json:"summary"`
			Current bool     `json:"current"`
		} `json:"versions"`
		Keep int `json:"keep"`
	}
	if err := json.Unmarshal([]byte(must("history", "-o", "json")), &hist); err != nil {
		t.Fatal(err)
	}
	if hist.Keep != 3 || len(hist.Versions) != 3 || hist.Versions[0].Number != "6" || !hist.Versions[0].Current ||
		hist.Versions[0].Origin != "undo" || hist.Versions[0].Summary[0] != "undo: the document of version 4" {
		t.Fatalf("history -o json: %+v", hist)
	}

	// The JSON gateway.
	get := func(method, path, body string, hdr ...string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		method, path, body string
		hdr                []string
		code               int
		want               string
	}{
		{"GET", "/v1/config/versions", "", nil, 200, `"number":"6"`},
		{"GET", "/v1/config/versions/5", "", nil, 200, `"yaml":`},
		{"GET", "/v1/config/versions/1", "", nil, 404, `"code":"NOT_FOUND"`},
		{"GET", "/v1/config/versions/abc", "", nil, 400, `version number \"abc\"`},
		{"GET", "/v1/config/diff?from=5&to=6", "", nil, 200, `"unified":"--- v5 `},
		{"GET", "/v1/config/diff?from=five", "", nil, 400, `query from=\"five\"`},
		{"POST", "/v1/config/undo", `{"to": 5}`, []string{"Omnirelay-Author", "dave"}, 200, `"number":"7"`},
		{"POST", "/v1/config/undo", `{"to": -1}`, nil, 400, `"code":"INVALID_ARGUMENT"`},
		{"POST", "/v1/config/undo", `{"too": 1}`, nil, 400, `unknown field`},
		{"POST", "/v1/config?filename=gw.yaml", historyDoc(8), []string{"Omnirelay-Author", "erin"}, 200, `"number":"8"`},
		{"DELETE", "/v1/config/versions", "", nil, 405, `METHOD_NOT_ALLOWED`},
	} {
		code, body := get(tc.method, tc.path, tc.body, tc.hdr...)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Fatalf("%s %s: %d %s; want %d with %q", tc.method, tc.path, code, body, tc.code, tc.want)
		}
	}
	out = must("history")
	if flat := normalize(out); !strings.Contains(flat, "dave undo") || !strings.Contains(flat, "erin apply") {
		t.Fatalf("gateway authors not recorded:\n%s", out)
	}
}
