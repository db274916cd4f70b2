package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/app"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

// Operations tests: hot reload and SIGHUP (drain_test.go: drain and the
// binary). Helpers carry an ops prefix because other e2e files are written
// in parallel in this package.

const reloadConfig = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    virtual_hosts:
      - name: all
        routes:
          - match: { path_prefix: / }
            cluster: {{target}}
clusters:
  - { name: blue, endpoints: [{{blue}}] }
  - { name: green, endpoints: [{{green}}] }
`

// opsMetric sums the samples of a metric whose labels include every
// name="value" pair given, read from the admin endpoint's /metrics.
func opsMetric(t testing.TB, p *proxy, name string, labels ...string) float64 {
	t.Helper()
	return opsMetricAt(t, p.AdminURL("/metrics"), name, labels...)
}

func opsMetricAt(t testing.TB, url, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		var lbls string
		if rest[0] == '{' {
			end := strings.IndexByte(rest, '}')
			lbls, rest = rest[1:end], rest[end+1:]
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			match = match && strings.Contains(","+lbls+",", ","+labels[i]+`="`+labels[i+1]+`",`)
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// opsBackendOf returns which backend answered GET url ("" on any error), for
// polls that must not fail the test on a transient answer.
func opsBackendOf(c *http.Client, url string) string {
	resp, err := c.Get(url)
	if err != nil {
		return ""
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return resp.Header.Get("x-backend")
}

// opsWaitVersionChange waits until the proxy runs a version other than old
// and returns it.
func opsWaitVersionChange(t testing.TB, p *proxy, old string) string {
	t.Helper()
	var id string
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "a new config version", testutil.Bool(func() bool {
		id = p.Runtime.Current().ID
		return id != old
	}))
	return id
}

// opsGate is a backend whose requests block until released, so that tests
// hold a request in flight across a reload or a drain without sleeping.
type opsGate struct {
	*backend
	arrived chan struct{}
	release chan struct{}
}

func startOpsGate(t testing.TB, name string) *opsGate {
	g := &opsGate{arrived: make(chan struct{}, 16), release: make(chan struct{})}
	g.backend = startBackend(t, name, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			g.arrived <- struct{}{}
			select {
			case <-g.release:
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "%s done", name)
	})
	// A test that fails before releasing must not hang the backend's Close.
	t.Cleanup(g.open)
	return g
}

func (g *opsGate) open() {
	select {
	case <-g.release:
	default:
		close(g.release)
	}
}

func (g *opsGate) waitArrived(t testing.TB) {
	t.Helper()
	select {
	case <-g.arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("slow request never reached the backend")
	}
}

type opsResult struct {
	status  int
	backend string
	body    string
	err     error
}

// opsGetAsync issues GET url on its own connection and reports the outcome.
func opsGetAsync(url string) <-chan opsResult {
	return opsGetAsyncWith(&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}, url)
}

func opsGetAsyncWith(c *http.Client, url string) <-chan opsResult {
	ch := make(chan opsResult, 1)
	go func() {
		resp, err := c.Get(url)
		if err != nil {
			ch <- opsResult{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		ch <- opsResult{status: resp.StatusCode, backend: resp.Header.Get("x-backend"), body: string(b), err: err}
	}()
	return ch
}

func opsAwait(t testing.TB, ch <-chan opsResult) opsResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("request did not finish")
		return opsResult{}
	}
}

func TestReloadMovesTraffic(t *testing.T) {
	blue, green := startBackend(t, "blue", nil), startBackend(t, "green", nil)
	vars := map[string]string{"web": testutil.Addr(t), "blue": blue.Addr, "green": green.Addr, "target": "blue"}
	p := startProxy(t, reloadConfig, vars)
	c := &http.Client{Timeout: 5 * time.Second}
	url := "http://" + vars["web"] + "/"
	if got := opsBackendOf(c, url); got != "blue" {
		t.Fatalf("before reload: backend %q, want blue", got)
	}
	applied := opsMetric(t, p, "omnirelay_config_reloads_total", "result", "applied")

	vars["target"] = "green"
	start := time.Now()
	writeConfig(t, p.ConfigPath, reloadConfig, vars)
	testutil.Eventually(t, time.Second, 10*time.Millisecond, "traffic on green within 1s", func() (bool, string) { got := opsBackendOf(c, url); return got == "green", fmt.Sprint(got) })
	t.Logf("traffic moved %v after the rewrite", time.Since(start).Round(time.Millisecond))
	if got := opsMetric(t, p, "omnirelay_config_reloads_total", "result", "applied"); got != applied+1 {
		t.Fatalf("applied reloads %v, want %v", got, applied+1)
	}
	if got := opsMetric(t, p, "omnirelay_config_info"); got != 1 {
		t.Fatalf("omnirelay_config_info sums to %v over versions, want 1 (only the running one)", got)
	}
	if got := opsMetric(t, p, "omnirelay_config_info", "version", p.Runtime.Current().ID); got != 1 {
		t.Fatalf("omnirelay_config_info for the running version = %v", got)
	}
	// A rewrite that changes nothing but bytes is not a new version.
	writeConfig(t, p.ConfigPath, reloadConfig+"\n# comment only\n", vars)
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "unchanged reload counted", testutil.Bool(func() bool {
		return opsMetric(t, p, "omnirelay_config_reloads_total", "result", "unchanged") >= 1
	}))
	if got := opsBackendOf(c, url); got != "green" {
		t.Fatalf("after no-op rewrite: backend %q", got)
	}
}

// An idle keep-alive connection must route its next request with the version
// running when that request arrives, not the one running when it went idle.
func TestReloadIdleKeepAliveUsesNewVersion(t *testing.T) {
	blue, green := startBackend(t, "blue", nil), startBackend(t, "green", nil)
	vars := map[string]string{"web": testutil.Addr(t), "blue": blue.Addr, "green": green.Addr, "target": "blue"}
	p := startProxy(t, reloadConfig, vars)
	conn := opsKeepAlive(t, vars["web"]) // one request, answered by blue
	if blue.Hits.Load() != 1 {
		t.Fatalf("blue hits %d", blue.Hits.Load())
	}
	old := p.Runtime.Current().ID
	vars["target"] = "green"
	writeConfig(t, p.ConfigPath, reloadConfig, vars)
	opsWaitVersionChange(t, p, old)

	if _, err := io.WriteString(conn, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("second request on the idle connection: %v", err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("x-backend"); got != "green" {
		t.Fatalf("request after the reload on an idle keep-alive connection went to %q, want green", got)
	}
}

func TestReloadUnderLoadDropsNothing(t *testing.T) {
	blue, green := startBackend(t, "blue", nil), startBackend(t, "green", nil)
	vars := map[string]string{"web": testutil.Addr(t), "blue": blue.Addr, "green": green.Addr, "target": "blue"}
	p := startProxy(t, reloadConfig, vars)
	url := "http://" + vars["web"] + "/load"

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Counting dials proves the requests ride the same keep-alive connections
	// across versions (net/http would otherwise hide closed connections by
	// retrying idempotent requests on new ones).
	var dials atomic.Int64
	tr := &http.Transport{MaxIdleConnsPerHost: 16, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	h1 := &http.Client{Timeout: 5 * time.Second, Transport: tr}
	// Two more clients share one h2c connection: streams across reloads.
	h2 := testutil.H2CClient()
	defer h2.CloseIdleConnections()
	for i := range 10 {
		c := h1
		if i >= 8 {
			c = h2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				ok.Add(1)
			}
		}()
	}

	start := time.Now()
	id := p.Runtime.Current().ID
	for i := range 10 {
		vars["target"] = []string{"green", "blue"}[i%2]
		writeConfig(t, p.ConfigPath, reloadConfig, vars)
		id = opsWaitVersionChange(t, p, id)
		time.Sleep(150 * time.Millisecond) // let traffic run on this version
	}
	for time.Since(start) < 2*time.Second {
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	t.Logf("%d requests, %d failed, %d connections, blue %d green %d", ok.Load()+failed.Load(), failed.Load(), dials.Load(), blue.Hits.Load(), green.Hits.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed across reloads; first: %v", failed.Load(), firstErr.Load())
	}
	if dials.Load() > 16 {
		t.Fatalf("%d connections dialled for 8 keep-alive clients: reloads closed connections", dials.Load())
	}
	if ok.Load() < 200 || blue.Hits.Load() == 0 || green.Hits.Load() == 0 {
		t.Fatalf("load did not exercise both versions: ok %d blue %d green %d", ok.Load(), blue.Hits.Load(), green.Hits.Load())
	}
	if got := opsMetric(t, p, "omnirelay_config_reloads_total", "result", "applied"); got < 11 {
		t.Fatalf("applied reloads %v, want 11 (start + 10)", got)
	}
}

func TestReloadInFlightRequestsFinish(t *testing.T) {
	const twoClusters = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    virtual_hosts:
      - name: all
        routes: [{ match: { path_prefix: / }, cluster: {{target}}, timeout: 10s }]
clusters:
  - { name: slow, endpoints: [{{slow}}] }
  - { name: green, endpoints: [{{green}}] }
`
	const greenOnly = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    virtual_hosts:
      - name: all
        routes: [{ match: { path_prefix: / }, cluster: green }]
clusters:
  - { name: green, endpoints: [{{green}}] }
`
	tests := []struct {
		name string
		next string // the config swapped in while the request runs
		// served names the listener that takes new requests after the swap.
		served string
	}{
		{name: "route moved", next: twoClusters, served: "web"},
		{name: "cluster removed", next: greenOnly, served: "web"},
		{name: "listener removed", next: strings.ReplaceAll(greenOnly, "web", "other"), served: "other"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			slow, green := startOpsGate(t, "slow"), startBackend(t, "green", nil)
			vars := map[string]string{"web": testutil.Addr(t), "other": testutil.Addr(t), "slow": slow.Addr, "green": green.Addr, "target": "slow"}
			p := startProxy(t, twoClusters, vars)
			old := p.Runtime.Current().ID

			inflight := opsGetAsync("http://" + vars["web"] + "/slow")
			slow.waitArrived(t)
			vars["target"] = "green"
			writeConfig(t, p.ConfigPath, tc.next, vars)
			opsWaitVersionChange(t, p, old)
			if got := opsBackendOf(&http.Client{Timeout: 5 * time.Second}, "http://"+vars[tc.served]+"/"); got != "green" {
				t.Fatalf("new requests after the swap went to %q", got)
			}
			slow.open()
			r := opsAwait(t, inflight)
			if r.err != nil || r.status != 200 || r.body != "slow done" {
				t.Fatalf("in-flight request across the swap: status %d body %q err %v", r.status, r.body, r.err)
			}
		})
	}
}

func TestReloadAddsAndRemovesListeners(t *testing.T) {
	const listeners = `
admin: { address: {{admin}} }
listeners:
{{listeners}}
clusters:
  - { name: blue, endpoints: [{{blue}}] }
`
	listener := func(name, addr string) string {
		return fmt.Sprintf(`  - name: %s
    address: %s
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: blue }] }]
`, name, addr)
	}
	blue := startBackend(t, "blue", nil)
	web, api := testutil.Addr(t), testutil.Addr(t)
	vars := map[string]string{"blue": blue.Addr, "listeners": listener("web", web)}
	p := startProxy(t, listeners, vars)
	c := &http.Client{Timeout: 5 * time.Second}

	vars["listeners"] = listener("web", web) + listener("api", api)
	writeConfig(t, p.ConfigPath, listeners, vars)
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "added listener serving", func() (bool, string) {
		got := opsBackendOf(c, "http://"+api+"/")
		return got == "blue", fmt.Sprint(got)
	})

	// Same name, new address: re-bound, the old port released.
	moved := testutil.Addr(t)
	vars["listeners"] = listener("web", web) + listener("api", moved)
	writeConfig(t, p.ConfigPath, listeners, vars)
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "moved listener serving", func() (bool, string) {
		got := opsBackendOf(c, "http://"+moved+"/")
		return got == "blue", fmt.Sprint(got)
	})
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "old address released", testutil.Bool(func() bool {
		conn, err := net.DialTimeout("tcp", api, time.Second)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	}))
	api = moved

	vars["listeners"] = listener("api", api)
	writeConfig(t, p.ConfigPath, listeners, vars)
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "removed listener refusing connections", testutil.Bool(func() bool {
		conn, err := net.DialTimeout("tcp", web, time.Second)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	}))
	if got := opsBackendOf(c, "http://"+api+"/"); got != "blue" {
		t.Fatalf("kept listener after removing the other: backend %q", got)
	}
	if p.ListenerAddr("web") != nil {
		t.Fatal("runtime still lists the removed listener")
	}
}

func TestReloadRejectsBadConfig(t *testing.T) {
	blue, green := startBackend(t, "blue", nil), startBackend(t, "green", nil)
	vars := map[string]string{"web": testutil.Addr(t), "blue": blue.Addr, "green": green.Addr, "target": "blue"}
	p := startProxy(t, reloadConfig, vars)
	c := &http.Client{Timeout: 5 * time.Second}
	url := "http://" + vars["web"] + "/"
	good := p.Runtime.Current().ID
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	tests := []struct {
		name string
		cfg  string
	}{
		{name: "yaml syntax error", cfg: reloadConfig + "\n  - { name: broken, endpoints: [\n"},
		{name: "unknown cluster", cfg: strings.Replace(reloadConfig, "cluster: {{target}}", "cluster: nope", 1)},
		{name: "invalid weight", cfg: strings.Replace(reloadConfig, "cluster: {{target}}",
			"weighted_clusters: [{ cluster: blue, weight: 0 }, { cluster: green, weight: 1 }]", 1)},
		{name: "unknown field", cfg: strings.Replace(reloadConfig, "cluster: {{target}}", "cluster: green\n            retry_everything: true", 1)},
		// Valid on paper, but the new listener's port is taken: the version
		// fails while binding and must be rejected as a whole.
		// Valid on paper, but the new listener's port is taken: the version
		// fails while binding and must be rejected as a whole.
		{name: "port in use", cfg: strings.Replace(reloadConfig, "clusters:", `  - name: extra
    address: `+busy.Addr().String()+`
    virtual_hosts: [{ name: all, routes: [{ cluster: green }] }]
clusters:`, 1)},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := opsMetric(t, p, "omnirelay_config_reloads_total", "result", "rejected")
			writeConfig(t, p.ConfigPath, tc.cfg, vars)
			testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "rejection counted", testutil.Bool(func() bool {
				return opsMetric(t, p, "omnirelay_config_reloads_total", "result", "rejected") == before+1
			}))
			if id := p.Runtime.Current().ID; id != good {
				t.Fatalf("version changed to %s on a bad config", id)
			}
			if got := opsBackendOf(c, url); got != "blue" {
				t.Fatalf("old config no longer serving: backend %q", got)
			}
			resp, body := testutil.Get(t, c, p.AdminURL("/ready"))
			if resp.StatusCode != 200 || !strings.Contains(body, "version "+good) {
				t.Fatalf("/ready after a rejected config: %d %q (want version %s)", resp.StatusCode, body, good)
			}
		})
	}
	// The good file again: back in force (unchanged), and a real change applies.
	vars["target"] = "green"
	writeConfig(t, p.ConfigPath, reloadConfig, vars)
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "good config after bad ones", func() (bool, string) { got := opsBackendOf(c, url); return got == "green", fmt.Sprint(got) })
}

func TestReloadSIGHUPForcesReread(t *testing.T) {
	blue, green := startBackend(t, "blue", nil), startBackend(t, "green", nil)
	vars := map[string]string{"web": testutil.Addr(t), "blue": blue.Addr, "green": green.Addr, "target": "blue"}
	// Polling every hour: only Reload (what SIGHUP calls) can pick up edits.
	p := startProxyOpts(t, reloadConfig, vars, func(o *app.Options) { o.PollInterval = time.Hour })
	c := &http.Client{Timeout: 5 * time.Second}
	url := "http://" + vars["web"] + "/"

	vars["target"] = "green"
	writeConfig(t, p.ConfigPath, reloadConfig, vars)
	if got := opsBackendOf(c, url); got != "blue" {
		t.Fatalf("edit applied without a reload (poll is 1h): backend %q", got)
	}
	p.Reload()
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "Reload applies the edit", func() (bool, string) { got := opsBackendOf(c, url); return got == "green", fmt.Sprint(got) })

	// Unchanged content: a forced reload still re-applies (certificates on
	// disk may have rotated), counted as applied.
	applied := opsMetric(t, p, "omnirelay_config_reloads_total", "result", "applied")
	p.Reload()
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "forced re-apply of unchanged config", testutil.Bool(func() bool {
		return opsMetric(t, p, "omnirelay_config_reloads_total", "result", "applied") == applied+1
	}))
	if got := opsBackendOf(c, url); got != "green" {
		t.Fatalf("after forced re-apply: backend %q", got)
	}
}

func TestReloadStartFailsCleanly(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	web := testutil.Addr(t)
	tests := []struct {
		name    string
		cfg     string
		wantErr string // regexp; FILE stands for the config path
	}{
		{name: "unknown cluster", cfg: strings.Replace(reloadConfig, "cluster: {{target}}", "cluster: nope", 1),
			wantErr: `FILE:\d+:\d+: listeners\[0\]\.virtual_hosts\[0\]\.routes\[0\]\.cluster: unknown cluster "nope"`},
		// The second listener cannot bind: the first must not stay bound.
		{name: "port in use", cfg: strings.Replace(reloadConfig, "clusters:", `  - name: extra
    address: `+busy.Addr().String()+`
    virtual_hosts: [{ name: all, routes: [{ cluster: green }] }]
clusters:`, 1), wantErr: `address already in use`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			writeConfig(t, path, tc.cfg, map[string]string{"admin": testutil.Addr(t), "web": web,
				"blue": "127.0.0.1:1", "green": "127.0.0.1:2", "target": "blue"})
			p, err := app.Start(app.Options{ConfigPath: path, Log: testutil.Logger(t), AdminAddress: "127.0.0.1:0"})
			if err == nil {
				_ = p.Shutdown(context.Background())
				t.Fatal("started on a config it cannot apply")
			}
			re := regexp.MustCompile(strings.ReplaceAll(tc.wantErr, "FILE", regexp.QuoteMeta(path)))
			if !re.MatchString(err.Error()) {
				t.Fatalf("error %q does not match %s", err, re)
			}
			ln, err := net.Listen("tcp", web)
			if err != nil {
				t.Fatalf("failed start left %s bound: %v", web, err)
			}
			ln.Close()
		})
	}
}
