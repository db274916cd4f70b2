package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/controlplane/rollout"
	"github.com/omnirelay/omnirelay/internal/controlplane/serve"
)

// TestRolloutCommands drives a config rollout with omnictl and the JSON
// gateway against a real MeshKit on bbolt whose followed config file is
// rolled out by a plan (serve.Options.ConfigRollout).
func TestRolloutCommands(t *testing.T) {
	dir := t.TempDir()
	write := func(name, doc string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	followed := write("followed.yaml", historyDoc(1))
	p, err := serve.Start(serve.Options{XDSAddress: "127.0.0.1:0", APIAddress: "127.0.0.1:0", DataDir: filepath.Join(dir, "data"),
		ConfigFile: followed, PollInterval: 20 * time.Millisecond, ConfigRollout: &rollout.Plan{Steps: []uint32{50}, Pause: time.Hour},
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	}()
	addr := p.APIAddr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	must := func(args ...string) string {
		t.Helper()
		out, stderr, err := run(ctx, addr, args...)
		if err != nil {
			t.Fatalf("omnictl %s: %v %s", strings.Join(args, " "), err, stderr)
		}
		return out
	}
	fails := func(want string, args ...string) {
		t.Helper()
		if out, _, err := run(ctx, addr, args...); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("omnictl %s: %q, %v; want an error with %q", strings.Join(args, " "), out, err, want)
		}
	}

	// The followed file's change becomes rollout 1, by the plan.
	write("followed.yaml", historyDoc(2))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s, err := p.MeshKit.Rollout(ctx); err == nil && s.ID == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the followed file's change started no rollout")
		}
		time.Sleep(10 * time.Millisecond)
	}
	out := must("rollout", "status")
	for _, want := range []string{"rollout 1: progressing", "by file " + followed, "over version 1", "▶50% (pause 1h0m0s)", "share:   50% of the proxies", "promotion in 1h0m0s"} {
		if !strings.Contains(out, want) {
			t.Fatalf("status lacks %q:\n%s", want, out)
		}
	}
	v3 := write("v3.yaml", historyDoc(3))
	fails("FailedPrecondition: apply "+v3+": rollout 1 (progressing at 50%): a rollout is in progress", "apply", "-f", v3)
	fails("FailedPrecondition", "undo")
	if out := must("rollout", "promote", "--reason", "looks good"); !strings.Contains(out, "rollout 1 promoted as version 2") {
		t.Fatalf("promote: %q", out)
	}
	fails("FailedPrecondition: promote: no rollout in progress", "rollout", "promote")

	fails(`--steps "10,x": item 1 ("x") is not a percent`, "apply", "--canary", "--steps", "10,x", "-f", v3)
	fails("--pause needs --canary", "apply", "--pause", "1s", "-f", v3)
	fails("InvalidArgument", "apply", "--canary", "--steps", "50,10", "-f", v3)
	if out := must("apply", "--canary", "--steps", "10,100", "--pause", "400ms", "-f", v3); !strings.Contains(out, "rollout 2 started:") || !strings.Contains(out, "at 10% of the proxies, steps 10% -> 100%, pause 400ms") {
		t.Fatalf("apply --canary: %q", out)
	}
	if out := must("rollout", "pause"); !strings.Contains(out, "rollout 2 paused at 10%") {
		t.Fatalf("pause: %q", out)
	}
	time.Sleep(600 * time.Millisecond)
	if out := must("rollout", "status"); !strings.Contains(out, "rollout 2: paused") || !strings.Contains(out, "▶10%") {
		t.Fatalf("paused status:\n%s", out)
	}
	must("rollout", "resume")
	out = must("rollout", "status", "-w", "--interval", "50ms")
	if !strings.Contains(out, "rollout 2: promoted") || !strings.Contains(out, "promoted as version 3") || !strings.Contains(out, "step 2/2: 100% of proxies") {
		t.Fatalf("status -w:\n%s", out)
	}
	if out := normalize(must("history")); !strings.Contains(out, "3* ") || !strings.Contains(out, "rollout - rollout 2 promoted (every step passed)") {
		t.Fatalf("history after the rollout:\n%s", out)
	}

	v4 := write("v4.yaml", historyDoc(4))
	fails("--window and --min-requests set the gates' window: give a gate too", "apply", "--canary", "--window", "2s", "-f", v4)
	fails("--max-p99 needs --canary", "apply", "--max-p99", "1s", "-f", v4)
	fails("InvalidArgument", "apply", "--canary", "--max-error-rate", "2", "-f", v4)
	must("apply", "--canary", "--pause", "1h", "--max-error-rate", "0.05", "--max-error-ratio", "2", "--max-p99", "250ms", "--max-p99-ratio", "3",
		"--min-requests", "10", "--window", "2s", "-f", v4)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if out = must("rollout", "status"); strings.Contains(out, "verdict:") || time.Now().After(deadline) {
			break
		}
	}
	if !strings.Contains(out, "gates:   error rate <= 5.00%, error rate <= 2.0x stable, p99 <= 250ms, p99 <= 3.0x stable (window 2s, min 10 requests)") ||
		!strings.Contains(out, "verdict: canary 0 req 0.00% err; stable 0 req 0.00% err; waiting for requests") {
		t.Fatalf("status with gates:\n%s", out)
	}
	if out := must("rollout", "abort"); !strings.Contains(out, "rollout 3 aborted") {
		t.Fatalf("abort: %q", out)
	}
	if p.MeshKit.Current() != 3 {
		t.Fatalf("current after abort: %d", p.MeshKit.Current())
	}

	// The JSON gateway.
	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Omnirelay-Author", "gw")
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
		code               int
		want               string
	}{
		{"GET", "/v1/rollout", "", 200, `"phase":"aborted"`},
		{"POST", "/v1/rollout?filename=gw.yaml&steps=20,60&pause=1h", historyDoc(5), 200, `"percent":20`},
		{"POST", "/v1/rollout?steps=ten", historyDoc(6), 400, `query steps=\"ten\"`},
		{"POST", "/v1/rollout?pause=soon", historyDoc(6), 400, `query pause=\"soon\"`},
		{"POST", "/v1/rollout/pause", `{"reason": "lunch"}`, 200, `"phase":"paused"`},
		{"POST", "/v1/rollout/resume", "", 200, `"phase":"progressing"`},
		{"POST", "/v1/rollout/bogus", "", 404, `no rollout action \"bogus\"`},
		{"POST", "/v1/rollout/promote", "", 200, `"promoted":"4"`},
		{"POST", "/v1/rollout/abort", "", 400, `FAILED_PRECONDITION`},
		{"GET", "/v1/rollout", "", 200, `"author":"gw"`},
	} {
		code, body := do(tc.method, tc.path, tc.body)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Fatalf("%s %s: %d %s; want %d with %q", tc.method, tc.path, code, body, tc.code, tc.want)
		}
	}
}
