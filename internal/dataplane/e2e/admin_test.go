package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// Admin endpoint and access-log tests.

const adminConfig = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    access_log: { path: {{log}} }
    virtual_hosts:
      - name: shop
        domains: ["shop.example.com"]
        routes:
{{extra}}
          - name: app-route
            match: { path_prefix: / }
            cluster: app
clusters:
  - { name: app, endpoints: [{{b1}}, {{b2}}] }
`

func startAdminProxy(t *testing.T) (*proxy, map[string]string, []*backend) {
	t.Helper()
	b1, b2 := startBackend(t, "b1", nil), startBackend(t, "b2", nil)
	vars := map[string]string{"web": testutil.Addr(t), "b1": b1.Addr, "b2": b2.Addr,
		"log": filepath.Join(t.TempDir(), "access.log"), "extra": ""}
	return startProxy(t, adminConfig, vars), vars, []*backend{b1, b2}
}

func TestAdminEndpoints(t *testing.T) {
	p, vars, _ := startAdminProxy(t)
	c := &http.Client{Timeout: 5 * time.Second}
	id := p.Runtime.Current().ID

	const n = 7
	for i := range n {
		resp, _ := testutil.Get(t, c, fmt.Sprintf("http://%s/item/%d", vars["web"], i), "host", "shop.example.com")
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}
	if resp, _ := testutil.Get(t, c, "http://"+vars["web"]+"/", "host", "elsewhere.example.com"); resp.StatusCode != 404 {
		t.Fatalf("unknown host: status %d, want 404", resp.StatusCode)
	}

	t.Run("ready", func(t *testing.T) {
		resp, body := testutil.Get(t, c, p.AdminURL("/ready"))
		if resp.StatusCode != 200 || !strings.Contains(body, "version "+id) {
			t.Fatalf("/ready: %d %q, want 200 naming version %s", resp.StatusCode, body, id)
		}
	})
	t.Run("healthz", func(t *testing.T) {
		resp, body := testutil.Get(t, c, p.AdminURL("/healthz"))
		if resp.StatusCode != 200 || strings.TrimSpace(body) != "ok" {
			t.Fatalf("/healthz: %d %q", resp.StatusCode, body)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		// Observations land after the response is written: poll.
		tests := []struct {
			name   string
			labels []string
			want   float64
		}{
			{"omnirelay_downstream_requests_total", []string{"listener", "web", "code_class", "2xx"}, n},
			{"omnirelay_downstream_requests_total", []string{"listener", "web", "code_class", "4xx"}, 1},
			{"omnirelay_downstream_request_duration_seconds_count", []string{"listener", "web"}, n + 1},
			{"omnirelay_downstream_request_duration_seconds_bucket", []string{"listener", "web", "le", "+Inf"}, n + 1},
			{"omnirelay_upstream_requests_total", []string{"cluster", "app", "code_class", "2xx"}, n},
			{"omnirelay_config_reloads_total", []string{"result", "applied"}, 1},
			{"omnirelay_config_info", []string{"version", id}, 1},
		}
		for _, tc := range tests {
			var got float64
			deadline := time.Now().Add(2 * time.Second)
			for {
				if got = opsMetric(t, p, tc.name, tc.labels...); got == tc.want || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if got != tc.want {
				t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
			}
		}
	})
	t.Run("config_dump", func(t *testing.T) {
		resp, body := testutil.Get(t, c, p.AdminURL("/config_dump"))
		if resp.StatusCode != 200 || !json.Valid([]byte(body)) {
			t.Fatalf("/config_dump: %d, valid JSON %v", resp.StatusCode, json.Valid([]byte(body)))
		}
		if ct := resp.Header.Get("content-type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("content-type %q", ct)
		}
		// It claims to be an envoy.admin.v3.ConfigDump: it must parse as one.
		var dump adminv3.ConfigDump
		if err := protojson.Unmarshal([]byte(body), &dump); err != nil {
			t.Fatalf("/config_dump is not a ConfigDump: %v", err)
		}
		var listeners, clusters []string
		for _, a := range dump.GetConfigs() {
			m, err := a.UnmarshalNew()
			if err != nil {
				t.Fatalf("config %s: %v", a.GetTypeUrl(), err)
			}
			switch d := m.(type) {
			case *adminv3.ListenersConfigDump:
				for _, s := range d.GetStaticListeners() {
					var l listenerv3.Listener
					if err := s.GetListener().UnmarshalTo(&l); err != nil {
						t.Fatal(err)
					}
					listeners = append(listeners, l.GetName())
				}
			case *adminv3.ClustersConfigDump:
				for _, s := range d.GetStaticClusters() {
					var cl clusterv3.Cluster
					if err := s.GetCluster().UnmarshalTo(&cl); err != nil {
						t.Fatal(err)
					}
					clusters = append(clusters, cl.GetName())
				}
			}
		}
		if fmt.Sprint(listeners) != "[web]" || fmt.Sprint(clusters) != "[app]" {
			t.Fatalf("dump lists listeners %v clusters %v, want [web] [app]", listeners, clusters)
		}
	})
	t.Run("clusters", func(t *testing.T) {
		resp, body := testutil.Get(t, c, p.AdminURL("/clusters"))
		var out struct {
			Clusters []struct {
				Name      string `json:"name"`
				Endpoints []struct {
					Address string `json:"address"`
					Healthy bool   `json:"healthy"`
					Total   uint64 `json:"total_requests"`
				} `json:"endpoints"`
			} `json:"clusters"`
		}
		if err := json.Unmarshal([]byte(body), &out); err != nil || resp.StatusCode != 200 {
			t.Fatalf("/clusters: %d %v\n%s", resp.StatusCode, err, body)
		}
		if len(out.Clusters) != 1 || out.Clusters[0].Name != "app" || len(out.Clusters[0].Endpoints) != 2 {
			t.Fatalf("/clusters: %s", body)
		}
		var total uint64
		for i, e := range out.Clusters[0].Endpoints {
			if e.Address != vars[fmt.Sprintf("b%d", i+1)] || !e.Healthy {
				t.Fatalf("endpoint %d: %+v", i, e)
			}
			total += e.Total
		}
		if total != n {
			t.Fatalf("endpoints report %d requests in total, want %d", total, n)
		}
	})
	t.Run("listeners", func(t *testing.T) {
		resp, body := testutil.Get(t, c, p.AdminURL("/listeners"))
		var out struct {
			Listeners []struct{ Name, Address string } `json:"listeners"`
		}
		if err := json.Unmarshal([]byte(body), &out); err != nil || resp.StatusCode != 200 {
			t.Fatalf("/listeners: %d %v\n%s", resp.StatusCode, err, body)
		}
		if len(out.Listeners) != 1 || out.Listeners[0].Name != "web" || out.Listeners[0].Address != vars["web"] {
			t.Fatalf("/listeners: %s", body)
		}
	})
	t.Run("drain", func(t *testing.T) {
		if resp, _ := testutil.Get(t, c, p.AdminURL("/drain")); resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("GET /drain: %d, want 405 (draining takes a POST)", resp.StatusCode)
		}
		if resp, _ := testutil.Get(t, c, p.AdminURL("/ready")); resp.StatusCode != 200 {
			t.Fatalf("GET /drain changed readiness: %d", resp.StatusCode)
		}
		called := make(chan struct{})
		p.Admin.OnDrain = func() { close(called) }
		resp, err := c.Post(p.AdminURL("/drain"), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST /drain: %d", resp.StatusCode)
		}
		select {
		case <-called:
		case <-time.After(2 * time.Second):
			t.Fatal("POST /drain did not start the drain")
		}
		if resp, body := testutil.Get(t, c, p.AdminURL("/ready")); resp.StatusCode != 503 {
			t.Fatalf("/ready while draining: %d %q, want 503", resp.StatusCode, body)
		}
		if resp, _ := testutil.Get(t, c, p.AdminURL("/healthz")); resp.StatusCode != 200 {
			t.Fatalf("/healthz while draining: %d, want 200 (alive)", resp.StatusCode)
		}
	})
}

// accessRecord is one access-log line (docs/config.md#access_log).
type accessRecord struct {
	Time            string `json:"time"`
	StartTime       string `json:"start_time"`
	Listener        string `json:"listener"`
	Method          string `json:"method"`
	Authority       string `json:"authority"`
	Path            string `json:"path"`
	Protocol        string `json:"protocol"`
	Status          int    `json:"status"`
	ResponseFlags   string `json:"response_flags"`
	BytesReceived   int64  `json:"bytes_received"`
	BytesSent       int64  `json:"bytes_sent"`
	DurationUS      int64  `json:"duration_us"`
	Route           string `json:"route"`
	UpstreamCluster string `json:"upstream_cluster"`
	UpstreamHost    string `json:"upstream_host"`
	Attempts        int    `json:"attempts"`
	DownstreamIP    string `json:"downstream_remote"`
	ServerName      string `json:"server_name"`
	UserAgent       string `json:"user_agent"`
	RequestID       string `json:"request_id"`
}

func (r accessRecord) start(t testing.TB) time.Time {
	ts, err := time.Parse(time.RFC3339Nano, r.StartTime)
	if err != nil {
		t.Fatalf("start_time %q: %v", r.StartTime, err)
	}
	return ts
}

func readAccessLog(t testing.TB, path string) []accessRecord {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []accessRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r accessRecord
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("access log line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

func TestAccessLogRecords(t *testing.T) {
	_, vars, backends := startAdminProxy(t)
	c := &http.Client{Timeout: 5 * time.Second}
	web := "http://" + vars["web"]

	resp, body := testutil.Get(t, c, web+"/a?x=1", "host", "shop.example.com", "user-agent", "ops-test", "x-request-id", "rid-1")
	if resp.StatusCode != 200 {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
	getBody := body
	req, err := http.NewRequest("POST", web+"/b", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "shop.example.com"
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	postBody, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	if resp, _ := testutil.Get(t, c, web+"/nowhere", "host", "elsewhere.example.com"); resp.StatusCode != 404 {
		t.Fatalf("no route: %d", resp.StatusCode)
	}
	resp, h2Body := testutil.Get(t, testutil.H2CClient(), web+"/h2", "host", "shop.example.com")
	if resp.StatusCode != 200 {
		t.Fatalf("h2c: %d", resp.StatusCode)
	}

	var recs []accessRecord
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "4 access-log records", testutil.Bool(func() bool {
		recs = readAccessLog(t, vars["log"])
		return len(recs) >= 4
	}))
	if len(recs) != 4 {
		t.Fatalf("%d records for 4 requests", len(recs))
	}
	// A record is written after its response, so a client may see the next
	// response first: order by start.
	slices.SortFunc(recs, func(a, b accessRecord) int { return a.start(t).Compare(b.start(t)) })
	hosts := map[string]bool{backends[0].Addr: true, backends[1].Addr: true}
	tests := []struct {
		name                       string
		rec                        accessRecord
		method, path, proto, flags string
		status                     int
		cluster                    string
		bytesSent, bytesRecv       int
	}{
		{"GET", recs[0], "GET", "/a?x=1", "HTTP/1.1", "", 200, "app", len(getBody), 0},
		{"POST", recs[1], "POST", "/b", "HTTP/1.1", "", 200, "app", len(postBody), len("hello")},
		{"no route", recs[2], "GET", "/nowhere", "HTTP/1.1", "NR", 404, "", -1, 0},
		{"h2c", recs[3], "GET", "/h2", "HTTP/2", "", 200, "app", len(h2Body), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.rec
			if r.Method != tc.method || r.Path != tc.path || r.Protocol != tc.proto || r.Status != tc.status ||
				r.ResponseFlags != tc.flags || r.UpstreamCluster != tc.cluster || r.Listener != "web" {
				t.Fatalf("record %+v", r)
			}
			if tc.cluster != "" && (!hosts[r.UpstreamHost] || r.Route != "app-route" || r.Attempts != 1) {
				t.Fatalf("upstream fields: host %q route %q attempts %d", r.UpstreamHost, r.Route, r.Attempts)
			}
			if tc.cluster == "" && r.UpstreamHost != "" {
				t.Fatalf("no-route record names upstream host %q", r.UpstreamHost)
			}
			if tc.bytesSent >= 0 && r.BytesSent != int64(tc.bytesSent) {
				t.Fatalf("bytes_sent %d, want %d", r.BytesSent, tc.bytesSent)
			}
			if r.BytesReceived != int64(tc.bytesRecv) {
				t.Fatalf("bytes_received %d, want %d", r.BytesReceived, tc.bytesRecv)
			}
			if r.DurationUS <= 0 || r.DurationUS > 5e6 {
				t.Fatalf("duration_us %d", r.DurationUS)
			}
			if r.DownstreamIP == "" || r.Authority == "" {
				t.Fatalf("downstream_remote %q authority %q", r.DownstreamIP, r.Authority)
			}
		})
	}
	if recs[0].UserAgent != "ops-test" || recs[0].RequestID != "rid-1" {
		t.Fatalf("user_agent %q request_id %q", recs[0].UserAgent, recs[0].RequestID)
	}
}

// openFilesNamed counts this process's descriptors open on path (Linux).
func openFilesNamed(t testing.TB, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}

func TestAccessLogSurvivesReloads(t *testing.T) {
	p, vars, _ := startAdminProxy(t)
	c := &http.Client{Timeout: 5 * time.Second}
	if resp, _ := testutil.Get(t, c, "http://"+vars["web"]+"/", "host", "shop.example.com"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	open := openFilesNamed(t, vars["log"])
	if open < 1 {
		t.Fatalf("access log %s not open", vars["log"])
	}
	id := p.Runtime.Current().ID
	for i := range 5 {
		// A new version that keeps the listener's access log.
		vars["extra"] = fmt.Sprintf("          - { match: { path: /v%d }, direct_response: { status: 200, body: v%d } }", i, i)
		writeConfig(t, p.ConfigPath, adminConfig, vars)
		id = opsWaitVersionChange(t, p, id)
	}
	if resp, body := testutil.Get(t, c, "http://"+vars["web"]+"/v4", "host", "shop.example.com"); resp.StatusCode != 200 || body != "v4" {
		_, dump := testutil.Get(t, c, p.AdminURL("/config_dump"))
		t.Fatalf("last version not serving: %d %q\n%s", resp.StatusCode, body, dump)
	}
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, "records of both requests", func() (bool, string) { got := len(readAccessLog(t, vars["log"])); return got == 2, fmt.Sprint(got) })
	if got := openFilesNamed(t, vars["log"]); got != open {
		t.Fatalf("access log open %d times after 5 reloads, %d before: reloads leak descriptors", got, open)
	}
}

// docs/config.md#access_log: tcp and tls listeners write one record per
// connection.
func TestAccessLogTCPListener(t *testing.T) {
	b := startBackend(t, "b", nil)
	dead := testutil.Addr(t)
	vars := map[string]string{"db": testutil.Addr(t), "down": testutil.Addr(t), "sni": testutil.Addr(t), "b": b.Addr, "dead": dead,
		"log": filepath.Join(t.TempDir(), "tcp.log")}
	startProxy(t, `
admin: { address: {{admin}} }
listeners:
  - name: db
    address: {{db}}
    protocol: tcp
    cluster: app
    access_log: { path: {{log}} }
  - name: down
    address: {{down}}
    protocol: tcp
    cluster: gone
    access_log: { path: {{log}} }
  - name: passthrough
    address: {{sni}}
    protocol: tls
    sni_routes: [{ sni: [shop.example.com], cluster: app }]
    access_log: { path: {{log}} }
clusters:
  - { name: app, endpoints: [{{b}}] }
  - { name: gone, endpoints: [{{dead}}] }
`, vars)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, _ := testutil.Get(t, c, "http://"+vars["db"]+"/"); resp.StatusCode != 200 {
		t.Fatalf("through the tcp listener: %d", resp.StatusCode)
	}
	if conn, err := net.DialTimeout("tcp", vars["down"], 2*time.Second); err == nil {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = conn.Read(make([]byte, 1)) // closed by the proxy: no upstream
		conn.Close()
	}
	// The backend speaks plain HTTP, so the handshake fails; the proxy has
	// routed the connection by its SNI all the same.
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", vars["sni"], &tls.Config{ServerName: "shop.example.com"})
	if err == nil {
		tc.Close()
	}

	var recs map[string]accessRecord
	testutil.Eventually(t, 3*time.Second, 10*time.Millisecond, "a record per listener", testutil.Bool(func() bool {
		recs = map[string]accessRecord{}
		for _, r := range readAccessLog(t, vars["log"]) {
			recs[r.Listener] = r
		}
		return len(recs) == 3
	}))
	tests := []struct {
		listener, cluster, host, flags, sni string
		traffic                             bool
	}{
		{"db", "app", b.Addr, "", "", true},
		{"down", "gone", "", "UF", "", false},
		{"passthrough", "app", b.Addr, "", "shop.example.com", true},
	}
	for _, tc := range tests {
		t.Run(tc.listener, func(t *testing.T) {
			r := recs[tc.listener]
			if r.UpstreamCluster != tc.cluster || r.UpstreamHost != tc.host || r.ResponseFlags != tc.flags || r.ServerName != tc.sni {
				t.Fatalf("record %+v", r)
			}
			if tc.traffic != (r.BytesSent > 0 && r.BytesReceived > 0) {
				t.Fatalf("bytes sent %d received %d", r.BytesSent, r.BytesReceived)
			}
			if r.DownstreamIP == "" || r.DurationUS <= 0 || r.StartTime == "" {
				t.Fatalf("record %+v", r)
			}
		})
	}
}

// /config_dump must never show private keys, even ones written inline in an
// Envoy bootstrap.
func TestAdminConfigDumpRedactsKeys(t *testing.T) {
	certPEM, keyPEM := selfSigned(t)
	b := startBackend(t, "app", nil)
	_, edgePort, _ := net.SplitHostPort(testutil.Addr(t))
	bHost, bPort, _ := net.SplitHostPort(b.Addr)
	_, adminPort, _ := net.SplitHostPort(testutil.Addr(t))
	cfg := `
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: ` + adminPort + ` }
static_resources:
  listeners:
    - name: edge
      address:
        socket_address: { address: 127.0.0.1, port_value: ` + edgePort + ` }
      filter_chains:
        - transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              common_tls_context:
                tls_certificates:
                  - certificate_chain: { inline_string: ` + strconv.Quote(string(certPEM)) + ` }
                    private_key: { inline_string: ` + strconv.Quote(string(keyPEM)) + ` }
          filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: edge
                route_config:
                  name: edge
                  virtual_hosts: [{ name: all, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: app } }] }]
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
    - name: app
      type: STATIC
      load_assignment:
        cluster_name: app
        endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: ` + bHost + `, port_value: ` + bPort + ` } } } }] }]
`
	p := startProxy(t, cfg, nil)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "shop.example.com"}}}
	resp, body := testutil.Get(t, c, "https://127.0.0.1:"+edgePort+"/")
	if resp.StatusCode != 200 || resp.Header.Get("x-backend") != "app" {
		t.Fatalf("https through the inline certificate: %d %q", resp.StatusCode, body)
	}
	_, dump := testutil.Get(t, c, p.AdminURL("/config_dump"))
	keyBody := strings.Split(strings.TrimSpace(string(keyPEM)), "\n")[1]
	if strings.Contains(dump, keyBody) || strings.Contains(dump, "PRIVATE KEY") {
		t.Fatal("/config_dump shows the private key")
	}
	if !strings.Contains(dump, "[redacted]") || !strings.Contains(dump, "BEGIN CERTIFICATE") {
		t.Fatalf("/config_dump lacks the redaction marker or the (public) certificate:\n%s", dump)
	}
}
