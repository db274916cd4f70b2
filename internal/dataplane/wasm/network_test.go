package wasm_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/wasm"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

// tcpEcho echoes every connection's bytes back.
func tcpEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

const networkConfig = `
admin: { address: {{admin}} }
listeners:
  - name: guard
    address: {{guard}}
    protocol: tcp
    cluster: echo
    filters:
      - extension: { name: tcp-guard, package: tcp-guard.orx, config: "deny: forbidden", deadline: 2s }
  - name: lines
    address: {{lines}}
    protocol: tcp
    cluster: echo
    filters:
      - extension: { name: tcp-lines, package: tcp-guard.orx, config: "lines: true", deadline: 2s }
  - name: loop-open
    address: {{loopopen}}
    protocol: tcp
    cluster: echo
    filters:
      - extension: { name: tcp-loop-open, package: tcp-guard.orx, config: "loop: true", policy: fail_open, deadline: 50ms }
  - name: loop-closed
    address: {{loopclosed}}
    protocol: tcp
    cluster: echo
    filters:
      - extension: { name: tcp-loop-closed, package: tcp-guard.orx, config: "loop: true", policy: fail_closed, deadline: 50ms }
clusters:
  - { name: echo, endpoints: [{{echo}}] }
`

// TestNetworkFilterThroughProxy runs the tcp-guard network filter on real
// tcp listeners of a real OmniRelay: bytes rewritten both ways, a
// connection closed by the plugin, and a guest stuck in a loop under
// fail_open (bytes pass unchanged) and fail_closed (connection closed).
func TestNetworkFilterThroughProxy(t *testing.T) {
	dir := t.TempDir()
	writePackage(t, dir, "tcp-guard", wasm.GuestTCPGuard, wasm.ABI021)
	vars := map[string]string{"guard": testutil.Addr(t), "lines": testutil.Addr(t), "loopopen": testutil.Addr(t), "loopclosed": testutil.Addr(t), "echo": tcpEcho(t)}
	startProxy(t, dir, networkConfig, vars)

	// exchange sends line and returns the first line that comes back, or
	// the error that ended the connection.
	exchange := func(t *testing.T, listener, line string) (string, error) {
		t.Helper()
		c, err := net.DialTimeout("tcp", vars[listener], 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(c, line); err != nil {
			return "", err
		}
		return bufio.NewReader(c).ReadString('\n')
	}
	tests := []struct {
		name, listener, send, want string
		closed                     bool
	}{
		{name: "rewrites both ways", listener: "guard", send: "hello ping\n", want: "[wasm] hello PING\n"},
		{name: "plugin closes the connection", listener: "guard", send: "a forbidden word\n", closed: true},
		{name: "runaway guest under fail_open passes bytes", listener: "loopopen", send: "hello ping\n", want: "hello ping\n"},
		{name: "runaway guest under fail_closed closes", listener: "loopclosed", send: "hello ping\n", closed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 3 {
				got, err := exchange(t, tt.listener, tt.send)
				if tt.closed {
					var ne net.Error
					if got != "" || err == nil || (errors.As(err, &ne) && ne.Timeout()) {
						t.Fatalf("got %q, %v: want the connection closed with nothing read", got, err)
					}
					continue
				}
				if err != nil || got != tt.want {
					t.Fatalf("got %q, %v: want %q", got, err, tt.want)
				}
			}
		})
	}

	// A line written in two pieces: the plugin pauses on the first, so the
	// host holds it back and shows it again with the second; the upstream
	// gets (and echoes) the line whole, which comes back with one prefix.
	// The pause between the writes is what makes the proxy read them
	// separately (the guard listener, which does not hold, returns two
	// prefixed pieces then).
	t.Run("held bytes go with the next ones", func(t *testing.T) {
		for _, l := range []struct{ listener, want string }{
			{"lines", "[wasm] hello PING\n"},
			{"guard", "[wasm] hel[wasm] lo PING\n"},
		} {
			c, err := net.DialTimeout("tcp", vars[l.listener], 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			r := bufio.NewReader(c)
			if _, err := io.WriteString(c, "hel"); err != nil {
				t.Fatal(err)
			}
			if l.listener == "guard" {
				// Wait for the first piece to come back before the second.
				buf := make([]byte, len("[wasm] hel"))
				if _, err := io.ReadFull(r, buf); err != nil {
					t.Fatal(err)
				}
				r = bufio.NewReader(io.MultiReader(strings.NewReader(string(buf)), c))
			} else {
				time.Sleep(50 * time.Millisecond) // nothing comes back to wait for: the bytes are held
			}
			if _, err := io.WriteString(c, "lo ping\n"); err != nil {
				t.Fatal(err)
			}
			got, err := r.ReadString('\n')
			c.Close()
			if err != nil || got != l.want {
				t.Fatalf("%s: got %q, %v: want %q", l.listener, got, err, l.want)
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + vars["admin"] + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{
			`omnirelay_wasm_counter{name="tcp_connections",plugin="tcp-guard"}`,
			`omnirelay_extension_calls_total{extension="tcp-loop-open",kind="wasm",outcome="timeout"} 3`,
			`omnirelay_extension_calls_total{extension="tcp-loop-closed",kind="wasm",outcome="timeout"} 3`,
		} {
			if !strings.Contains(string(b), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
}
