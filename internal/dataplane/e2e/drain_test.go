package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// Graceful drain, in process and as the omnirelay binary (signals, POST
// /drain, validate).
// opsKeepAlive opens a raw HTTP/1.1 connection and completes one request on
// it, leaving it idle in keep-alive.
func opsKeepAlive(t testing.TB, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, "GET /idle HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("keep-alive request: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("keep-alive request: status %d close %v", resp.StatusCode, resp.Close)
	}
	if br.Buffered() != 0 {
		t.Fatalf("%d unexpected bytes after the response", br.Buffered())
	}
	return conn
}

// opsClosedByPeer reports whether the peer closed conn (EOF or reset)
// within d.
func opsClosedByPeer(conn net.Conn, d time.Duration) bool {
	_ = conn.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	_, err := conn.Read(b[:])
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// opsH2Idle opens an h2c (prior knowledge) connection and completes the
// SETTINGS exchange, leaving it idle.
func opsH2Idle(t testing.TB, addr string) *http2.Framer {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("h2c handshake: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			if err := fr.WriteSettingsAck(); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetDeadline(time.Time{})
			return fr
		}
	}
}

// opsGoAwayOrClosed reports whether the server sent GOAWAY or closed the
// connection within d.
func opsGoAwayOrClosed(t testing.TB, fr *http2.Framer, d time.Duration) bool {
	t.Helper()
	done := make(chan bool, 1)
	go func() {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				var ne net.Error
				done <- !(errors.As(err, &ne) && ne.Timeout())
				return
			}
			if _, ok := f.(*http2.GoAwayFrame); ok {
				done <- true
				return
			}
		}
	}()
	select {
	case ok := <-done:
		return ok
	case <-time.After(d):
		return false
	}
}

func TestDrainShutdownFinishesInFlight(t *testing.T) {
	slow := startOpsGate(t, "slow")
	vars := map[string]string{"web": testutil.Addr(t), "blue": slow.Addr, "green": slow.Addr, "target": "blue"}
	p := startProxy(t, reloadConfig, vars)
	idle := opsKeepAlive(t, vars["web"])
	idleH2 := opsH2Idle(t, vars["web"])
	inflight := opsGetAsync("http://" + vars["web"] + "/slow")
	slow.waitArrived(t)
	h2 := testutil.H2CClient()
	defer h2.CloseIdleConnections()
	inflightH2 := opsGetAsyncWith(h2, "http://"+vars["web"]+"/slow")
	slow.waitArrived(t)

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- p.Shutdown(ctx)
	}()
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "new connections refused once draining", testutil.Bool(func() bool {
		conn, err := net.DialTimeout("tcp", vars["web"], time.Second)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	}))
	if !opsClosedByPeer(idle, 2*time.Second) {
		t.Fatal("idle keep-alive connection still open while draining")
	}
	if !opsGoAwayOrClosed(t, idleH2, 2*time.Second) {
		t.Fatal("idle h2c connection got neither GOAWAY nor a close while draining")
	}
	select {
	case r := <-inflight:
		t.Fatalf("in-flight request ended before its backend answered: %+v", r)
	case r := <-inflightH2:
		t.Fatalf("in-flight h2c request ended before its backend answered: %+v", r)
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	default:
	}
	slow.open()
	r := opsAwait(t, inflight)
	if r.err != nil || r.status != 200 || r.body != "slow done" {
		t.Fatalf("in-flight request during drain: status %d body %q err %v", r.status, r.body, r.err)
	}
	r = opsAwait(t, inflightH2)
	if r.err != nil || r.status != 200 || r.body != "slow done" {
		t.Fatalf("in-flight h2c request during drain: status %d body %q err %v", r.status, r.body, r.err)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the last request finished")
	}
}

func TestDrainShutdownTimesOut(t *testing.T) {
	slow := startOpsGate(t, "slow")
	vars := map[string]string{"web": testutil.Addr(t), "blue": slow.Addr, "green": slow.Addr, "target": "blue"}
	p := startProxy(t, reloadConfig, vars)
	inflight := opsGetAsync("http://" + vars["web"] + "/slow")
	slow.waitArrived(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown past its deadline: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Shutdown took %v with a 300ms deadline", d)
	}
	if r := opsAwait(t, inflight); r.err == nil && r.status == 200 {
		t.Fatalf("a request cut by the drain deadline reported success: %+v", r)
	}
}

// opsBuildBinary builds cmd/omnirelay into dir, as users get it.
func opsBuildBinary(t testing.TB, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build the binary: %v", err)
	}
	bin := filepath.Join(dir, "omnirelay")
	out, err := exec.Command(goBin, "build", "-o", bin, "github.com/omnirelay/omnirelay/cmd/omnirelay").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// opsLockedBuffer collects a child process's output for failure messages.
type opsLockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *opsLockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *opsLockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// opsProcess is the omnirelay binary running `run --config`.
type opsProcess struct {
	cmd    *exec.Cmd
	out    *opsLockedBuffer
	exited chan error
	admin  string
}

func startOpsProcess(t *testing.T, bin, cfgPath, admin string) *opsProcess {
	t.Helper()
	p := &opsProcess{out: &opsLockedBuffer{}, exited: make(chan error, 1), admin: admin}
	p.cmd = exec.Command(bin, "run", "--config", cfgPath, "--drain-timeout", "5s")
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("omnirelay output:\n%s", p.out.String())
		}
	})
	testutil.Eventually(t, 10*time.Second, 10*time.Millisecond, "the process to report ready", testutil.Bool(func() bool {
		resp, err := http.Get("http://" + admin + "/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}))
	return p
}

func (p *opsProcess) signal(t testing.TB, s os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(s); err != nil {
		t.Fatalf("signal %v: %v", s, err)
	}
}

// appliedSinceSIGHUP reports whether the process logged an applied config
// after its last SIGHUP.
func (p *opsProcess) appliedSinceSIGHUP() bool {
	out := p.out.String()
	i := strings.LastIndex(out, `"msg":"SIGHUP: reloading config"`)
	return i >= 0 && strings.Contains(out[i:], `"msg":"config applied"`)
}

// wait returns the exit code.
func (p *opsProcess) wait(t testing.TB) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(10 * time.Second):
		t.Fatal("process did not exit")
		return -1
	}
}

func TestBinaryLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := opsBuildBinary(t, dir)

	t.Run("SIGHUP reloads and SIGTERM drains", func(t *testing.T) {
		blue, green := startBackend(t, "blue", nil), startOpsGate(t, "green")
		vars := map[string]string{"web": testutil.Addr(t), "admin": testutil.Addr(t), "blue": blue.Addr, "green": green.Addr, "target": "blue"}
		path := filepath.Join(t.TempDir(), "omnirelay.yaml")
		writeConfig(t, path, reloadConfig, vars)
		p := startOpsProcess(t, bin, path, vars["admin"])
		c := &http.Client{Timeout: 5 * time.Second}
		url := "http://" + vars["web"] + "/"
		metrics := "http://" + vars["admin"] + "/metrics"
		if got := opsBackendOf(c, url); got != "blue" {
			t.Fatalf("backend %q, want blue", got)
		}

		vars["target"] = "green"
		writeConfig(t, path, reloadConfig, vars)
		p.signal(t, syscall.SIGHUP)
		testutil.Eventually(t, 3*time.Second, 10*time.Millisecond, "SIGHUP applies the edit", func() (bool, string) { got := opsBackendOf(c, url); return got == "green", fmt.Sprint(got) })
		// The file poll may apply the edit before the SIGHUP does; count
		// from after the SIGHUP's own apply.
		testutil.Eventually(t, 3*time.Second, 10*time.Millisecond, "the SIGHUP's apply", testutil.Bool(p.appliedSinceSIGHUP))
		applied := opsMetricAt(t, metrics, "omnirelay_config_reloads_total", "result", "applied")
		p.signal(t, syscall.SIGHUP) // unchanged file: re-applied all the same
		testutil.Eventually(t, 3*time.Second, 10*time.Millisecond, "SIGHUP re-applies an unchanged file", testutil.Bool(func() bool {
			return opsMetricAt(t, metrics, "omnirelay_config_reloads_total", "result", "applied") == applied+1
		}))

		inflight := opsGetAsync(url + "slow")
		green.waitArrived(t)
		p.signal(t, syscall.SIGTERM)
		testutil.Eventually(t, 3*time.Second, 10*time.Millisecond, "listener closed after SIGTERM", testutil.Bool(func() bool {
			conn, err := net.DialTimeout("tcp", vars["web"], time.Second)
			if err != nil {
				return true
			}
			conn.Close()
			return false
		}))
		green.open()
		if r := opsAwait(t, inflight); r.err != nil || r.status != 200 || r.body != "green done" {
			t.Fatalf("request in flight at SIGTERM: status %d body %q err %v", r.status, r.body, r.err)
		}
		if code := p.wait(t); code != 0 {
			t.Fatalf("exit code %d after SIGTERM, want 0", code)
		}
	})

	t.Run("POST /drain stops the process", func(t *testing.T) {
		blue := startBackend(t, "blue", nil)
		vars := map[string]string{"web": testutil.Addr(t), "admin": testutil.Addr(t), "blue": blue.Addr, "green": blue.Addr, "target": "blue"}
		path := filepath.Join(t.TempDir(), "omnirelay.yaml")
		writeConfig(t, path, reloadConfig, vars)
		p := startOpsProcess(t, bin, path, vars["admin"])
		resp, err := http.Post("http://"+vars["admin"]+"/drain", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST /drain: %d", resp.StatusCode)
		}
		if code := p.wait(t); code != 0 {
			t.Fatalf("exit code %d after /drain, want 0", code)
		}
	})

	t.Run("validate", func(t *testing.T) {
		bad := strings.Replace(reloadConfig, "cluster: {{target}}", "cluster: nope", 1)
		// The position of the bad value, computed so the test follows edits
		// of reloadConfig.
		before, _, _ := strings.Cut(bad, "cluster: nope")
		line := strings.Count(before, "\n") + 1
		col := len(before) - strings.LastIndexByte(before, '\n') + len("cluster: ")
		vars := map[string]string{"web": "127.0.0.1:18080", "admin": "127.0.0.1:19901", "blue": "127.0.0.1:1", "green": "127.0.0.1:2", "target": "blue"}
		tests := []struct {
			name     string
			cfg      string
			wantCode int
			want     string // regexp; FILE stands for the config path
		}{
			{name: "good", cfg: reloadConfig, want: `^FILE: valid \(omnirelay.v1\): 1 listeners, 2 clusters, version \S+\n$`},
			{name: "unknown cluster", cfg: bad, wantCode: 1,
				want: fmt.Sprintf(`FILE:%d:%d: listeners\[0\]\.virtual_hosts\[0\]\.routes\[0\]\.cluster: unknown cluster "nope"`, line, col)},
			{name: "yaml syntax error", cfg: reloadConfig + "  - { name: x, endpoints: [\n", wantCode: 1, want: `FILE:\d+:\d+: `},
			{name: "unknown field", cfg: strings.Replace(reloadConfig, "virtual_hosts:", "virtual_hostz:", 1), wantCode: 1,
				want: `FILE:\d+:\d+: listeners\[0\]\.virtual_hostz: unknown field`},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "shop.yaml")
				writeConfig(t, path, tc.cfg, vars)
				out, err := exec.Command(bin, "validate", path).CombinedOutput()
				code := 0
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					code = ee.ExitCode()
				} else if err != nil {
					t.Fatal(err)
				}
				if code != tc.wantCode {
					t.Fatalf("exit code %d, want %d; output:\n%s", code, tc.wantCode, out)
				}
				re := regexp.MustCompile(strings.ReplaceAll(tc.want, "FILE", regexp.QuoteMeta(path)))
				if !re.Match(out) {
					t.Fatalf("output does not match %s:\n%s", re, out)
				}
			})
		}
	})
}
