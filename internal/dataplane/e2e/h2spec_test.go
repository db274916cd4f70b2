package e2e

// h2spec conformance of the proxy's HTTP/2 server, over h2c (prior
// knowledge) and TLS. The h2spec binary is not a Go module dependency of
// the proxy; build it with
//
//	cd tools/h2spec && go build -o /tmp/h2spec github.com/summerwind/h2spec/cmd/h2spec
//
// and run with H2SPEC=/tmp/h2spec.

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

const h2specConfig = `
admin: { address: {{admin}} }
listeners:
  - name: h2c
    address: {{h2c}}
    virtual_hosts:
      - name: all
        routes: [{ match: { path_prefix: / }, cluster: app }]
  - name: h2
    address: {{h2}}
    protocol: https
    tls: { certificates: [{ cert_file: {{cert}}, key_file: {{key}} }] }
    virtual_hosts:
      - name: all
        routes: [{ match: { path_prefix: / }, cluster: app }]
clusters:
  - { name: app, endpoints: [{{app}}] }
`

var (
	h2specSummary = regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`)
	h2specFailed  = regexp.MustCompile(`(?m)×\s+\d+:\s+(.+?)\s*$`)
)

// h2specKnown lists accepted deviations on every listener: none since the
// hand-written HTTP/2 server (internal/dataplane/h2) replaced x/net/http2's.
var h2specKnown = map[string]string{}

// h2specKnownH2C are accepted on the cleartext listener only, which speaks
// HTTP/1.1 too: bytes that are not the HTTP/2 preface are an HTTP/1.1
// request, and garbage gets HTTP/1.1's 400 before the close.
var h2specKnownH2C = map[string]string{
	"Sends invalid connection preface": "the h2c port also serves HTTP/1.1: a bad preface is answered 400",
}

func TestH2Spec(t *testing.T) {
	bin := os.Getenv("H2SPEC")
	if bin == "" {
		t.Skip("H2SPEC is not set (see the file comment to build h2spec)")
	}
	b := startCountingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte("ok"))
	})
	ca := newProtoCA(t)
	cert, key, _ := ca.issue(t, "h2spec", "localhost")
	h2cAddr, h2Addr := testutil.Addr(t), testutil.Addr(t)
	startProxy(t, h2specConfig, map[string]string{"h2c": h2cAddr, "h2": h2Addr, "app": b.addr, "cert": cert, "key": key})

	for _, tc := range []struct {
		name string
		addr string
		args []string
	}{
		{name: "h2c", addr: h2cAddr},
		{name: "tls", addr: h2Addr, args: []string{"-t", "-k"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host, port, _ := net.SplitHostPort(tc.addr)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			args := append([]string{"-h", host, "-p", port}, tc.args...)
			out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
			m := h2specSummary.FindSubmatch(out)
			if m == nil {
				t.Fatalf("h2spec %v: no summary (err %v):\n%s", args, err, out)
			}
			total, _ := strconv.Atoi(string(m[1]))
			passed, _ := strconv.Atoi(string(m[2]))
			failed, _ := strconv.Atoi(string(m[4]))
			t.Logf("h2spec %s: %s", tc.name, m[0])
			var unexpected []string
			listed := h2specFailed.FindAllStringSubmatch(h2specFailures(string(out)), -1)
			for _, f := range listed {
				why, ok := h2specKnown[f[1]]
				if !ok && tc.name == "h2c" {
					why, ok = h2specKnownH2C[f[1]]
				}
				if ok {
					t.Logf("known deviation: %s (%s)", f[1], why)
					continue
				}
				unexpected = append(unexpected, f[1])
			}
			if len(unexpected) > 0 || len(listed) != failed {
				t.Fatalf("h2spec: %d of %d failed, unexpected: %q\n%s", failed, total, unexpected, h2specFailures(string(out)))
			}
			if passed == 0 {
				t.Fatalf("h2spec passed nothing:\n%s", out)
			}
		})
	}
}

// h2specFailures returns the "Failures:" section of h2spec's report, or
// nothing when there is none.
func h2specFailures(out string) string {
	if i := strings.Index(out, "Failures:"); i >= 0 {
		return out[i:]
	}
	return ""
}

// TestH2SpecFrameSize checks without h2spec what its 4.2/3 case needs: the
// server advertises the RFC 9113 default SETTINGS_MAX_FRAME_SIZE (x/net's
// own default is 1 MiB, under which an oversized HEADERS frame is accepted).
func TestH2SpecFrameSize(t *testing.T) {
	b := startCountingBackend(t, func(w http.ResponseWriter, _ *http.Request) {})
	web := startProtoProxy(t, b.addr, "auto")
	c, br := rawDial(t, web)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, br)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame %T, want SETTINGS", f)
	}
	if v, ok := sf.Value(http2.SettingMaxFrameSize); ok && v != 16<<10 {
		t.Fatalf("server advertises SETTINGS_MAX_FRAME_SIZE %d, want 16384", v)
	}
	// A HEADERS frame over the limit is a connection error.
	if err := fr.WriteRawFrame(http2.FrameHeaders, http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream, 1, make([]byte, 20<<10)); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("connection ended without GOAWAY(FRAME_SIZE_ERROR): %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeFrameSize {
				t.Fatalf("GOAWAY %v, want FRAME_SIZE_ERROR", ga.ErrCode)
			}
			return
		}
	}
}
