package dsl

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/jwtauthn"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// testState stands in for extension.StreamState when a test calls a plugin
// without the extension filter.
type testState map[*filter.Stream]*any

func (ts testState) slot(s *filter.Stream) *any {
	if v, ok := ts[s]; ok {
		return v
	}
	v := new(any)
	ts[s] = v
	return v
}

func load(t testing.TB, rules, config string, o Options) *Plugin {
	t.Helper()
	if o.state == nil {
		o.state = testState{}.slot
	}
	p, err := NewRuntime(o).Compile("test", []byte(rules), []byte(config))
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return p
}

type streamOpts struct {
	method, path string
	headers      [][2]string
	remote       string
	sni          string
	peer         string
}

func newStream(o streamOpts) *filter.Stream {
	req := &message.Request{}
	if o.method == "" {
		o.method = "GET"
	}
	if o.path == "" {
		o.path = "/"
	}
	req.SetMethod(o.method)
	req.SetPath(o.path)
	req.SetScheme("http")
	req.SetAuthority("example.com:8080")
	for _, h := range o.headers {
		req.Header.Add(h[0], h[1])
	}
	s := &filter.Stream{Ctx: context.Background(), Req: req}
	if o.remote != "" {
		s.Downstream.RemoteAddr = netip.MustParseAddrPort(o.remote)
	}
	if o.sni != "" {
		s.Downstream.TLS = &tls.ConnectionState{ServerName: o.sni}
	}
	s.Downstream.PeerIdentity = o.peer
	return s
}

func body(t *testing.T, r *message.Response) string {
	t.Helper()
	if r.Body == nil {
		return ""
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

func TestRequestActions(t *testing.T) {
	claims := func(*filter.Stream) map[string]any {
		return map[string]any{"sub": "alice", "groups": []any{"admin", "dev"}}
	}
	tests := []struct {
		name   string
		rules  string
		config string
		stream streamOpts
		// want
		stop       bool
		status     int
		body       string
		header     string // name=value expected on the request (value "" = absent)
		path       string
		respHeader string // name=value on the local response
		rematched  bool
	}{
		{
			name: "set header literal",
			rules: `rules:
- name: tag
  when: request.path.startsWith("/api")
  actions: [{set_header: {name: X-Api, value: "yes"}}]`,
			stream: streamOpts{path: "/api/v1"},
			header: "x-api=yes",
		},
		{
			name: "condition false leaves the request alone",
			rules: `rules:
- name: tag
  when: request.path.startsWith("/api")
  actions: [{set_header: {name: x-api, value: "yes"}}]`,
			stream: streamOpts{path: "/web"},
			header: "x-api=",
		},
		{
			name: "set header from expression over several variables",
			rules: `rules:
- name: copy
  actions: [{set_header: {name: x-who, expr: 'request.method + " " + request.host + " " + request.headers["x-a"] + "/" + request.headers["X-B"] + " " + request.query["q"]'}}]`,
			stream: streamOpts{path: "/p?q=1&r=2", headers: [][2]string{{"x-a", "A"}, {"x-b", "B"}}},
			header: "x-who=GET example.com A/B 1",
		},
		{
			name: "missing header in condition means no match",
			rules: `rules:
- name: needs-header
  when: request.headers["x-missing"] == "1"
  actions: [{deny: {status: 403}}]`,
			header: "x-missing=",
		},
		{
			name: "optional lookup with default",
			rules: `rules:
- name: tenant
  actions: [{set_header: {name: x-tenant, expr: 'request.headers[?"x-tenant-id"].orValue("none")'}}]`,
			header: "x-tenant=none",
		},
		{
			name: "remove header",
			rules: `rules:
- name: strip
  when: '"x-debug" in request.headers'
  actions: [{remove_header: x-debug}]`,
			stream: streamOpts{headers: [][2]string{{"x-debug", "1"}, {"x-debug", "2"}}},
			header: "x-debug=",
		},
		{
			name: "rewrite path keeps the query",
			rules: `rules:
- name: v2
  when: request.path.startsWith("/v1/")
  actions: [{rewrite_path: '"/v2/" + request.path.substring(4)'}]`,
			stream:    streamOpts{path: "/v1/users?id=7"},
			path:      "/v2/users?id=7",
			rematched: true,
		},
		{
			name: "deny",
			rules: `rules:
- name: block-admin
  when: request.path.startsWith("/admin") && peer.spiffe_id != "spiffe://mesh/ops"
  actions: [{deny: {status: 403, body: "forbidden"}}]`,
			stream: streamOpts{path: "/admin", peer: "spiffe://mesh/web"},
			stop:   true, status: 403, body: "forbidden",
		},
		{
			name: "deny default status",
			rules: `rules:
- name: no-delete
  when: request.method == "DELETE"
  actions: [{deny: {}}]`,
			stream: streamOpts{method: "DELETE"},
			stop:   true, status: 403,
		},
		{
			name: "respond with headers",
			rules: `rules:
- name: health
  when: request.path == "/healthz"
  actions: [{respond: {status: 200, body: "ok", headers: {Content-Type: application/json, x-from: dsl}}}]`,
			stream:     streamOpts{path: "/healthz"},
			stop:       true,
			status:     200,
			body:       "ok",
			respHeader: "content-type=application/json",
		},
		{
			name: "route to",
			rules: `rules:
- name: canary
  when: request.headers[?"x-canary"].orValue("") == "1"
  actions: [{route_to: backend-canary}]`,
			stream:    streamOpts{headers: [][2]string{{"x-canary", "1"}}},
			header:    RouteToHeader + "=backend-canary",
			rematched: true,
		},
		{
			name: "metadata feeds later rules",
			rules: `rules:
- name: classify
  when: request.path.startsWith("/api")
  actions: [{set_metadata: {key: tier, expr: 'request.headers[?"x-tier"].orValue("free")'}}]
- name: use
  when: metadata["tier"] == "gold"
  actions: [{set_header: {name: x-priority, value: high}}]`,
			stream: streamOpts{path: "/api", headers: [][2]string{{"x-tier", "gold"}}},
			header: "x-priority=high",
		},
		{
			name: "connection variables",
			rules: `rules:
- name: conn
  when: connection.tls && connection.sni == "api.example.com" && connection.remote_ip == "10.1.2.3"
  actions: [{set_header: {name: x-conn, expr: 'connection.remote_ip + "|" + connection.sni'}}]`,
			stream: streamOpts{remote: "10.1.2.3:5555", sni: "api.example.com"},
			header: "x-conn=10.1.2.3|api.example.com",
		},
		{
			name: "jwt claims",
			rules: `rules:
- name: admins
  when: '"admin" in jwt.claims["groups"]'
  actions: [{set_header: {name: x-user, expr: 'string(jwt.claims["sub"])'}}]`,
			header: "x-user=alice",
		},
		{
			name: "config values",
			rules: `rules:
- name: env
  actions: [{set_header: {name: x-env, expr: 'config["env"]'}}]`,
			config: "env: prod\n",
			header: "x-env=prod",
		},
		{
			name: "first matching terminal action stops later rules",
			rules: `rules:
- name: deny-all
  actions: [{deny: {status: 401, body: "who?"}}]
- name: never
  actions: [{set_header: {name: x-after, value: "1"}}]`,
			stop: true, status: 401, body: "who?", header: "x-after=",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := load(t, tt.rules, tt.config, Options{Claims: claims})
			s := newStream(tt.stream)
			act, err := p.OnRequest(context.Background(), s)
			if err != nil {
				t.Fatalf("Request: %v", err)
			}
			if stop := act == extension.Stop; stop != tt.stop {
				t.Fatalf("stop = %v, want %v", stop, tt.stop)
			}
			if tt.stop {
				if s.Resp == nil || s.Resp.Status != tt.status {
					t.Fatalf("response = %+v, want status %d", s.Resp, tt.status)
				}
				if got := body(t, s.Resp); got != tt.body {
					t.Errorf("body = %q, want %q", got, tt.body)
				}
			}
			if tt.header != "" {
				name, want, _ := strings.Cut(tt.header, "=")
				got, ok := s.Req.Header.Get(name)
				if want == "" && ok {
					t.Errorf("header %s = %q, want absent", name, got)
				}
				if want != "" && string(got) != want {
					t.Errorf("header %s = %q, want %q", name, got, want)
				}
			}
			if tt.respHeader != "" {
				name, want, _ := strings.Cut(tt.respHeader, "=")
				if got, _ := s.Resp.Header.Get(name); string(got) != want {
					t.Errorf("response header %s = %q, want %q", name, got, want)
				}
			}
			if tt.path != "" && string(s.Req.Path) != tt.path {
				t.Errorf("path = %q, want %q", s.Req.Path, tt.path)
			}
			if rematched := s.RouteCleared(); rematched != tt.rematched {
				t.Errorf("rematched = %v, want %v", rematched, tt.rematched)
			}
			p.OnComplete(s)
		})
	}
}

func TestResponsePhase(t *testing.T) {
	rules := `rules:
- name: mark
  when: request.path.startsWith("/api")
  actions: [{set_metadata: {key: api, value: "true"}}]
- name: server-errors
  phase: response
  when: response.status >= 500 && metadata[?"api"].orValue("") == "true"
  actions:
  - set_header: {name: x-retry-hint, expr: '"status-" + string(response.status)'}
  - remove_header: server
`
	tests := []struct {
		name   string
		path   string
		status int
		hint   string
		server bool
	}{
		{name: "api 503", path: "/api/x", status: 503, hint: "status-503"},
		{name: "api 200", path: "/api/x", status: 200, server: true},
		{name: "web 503", path: "/web", status: 503, server: true},
	}
	p := load(t, rules, "", Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStream(streamOpts{path: tt.path})
			if _, err := p.OnRequest(context.Background(), s); err != nil {
				t.Fatalf("Request: %v", err)
			}
			s.Resp = &message.Response{Status: tt.status}
			s.Resp.Header.Add("server", "upstream")
			if err := p.OnResponse(context.Background(), s); err != nil {
				t.Fatalf("Response: %v", err)
			}
			if got, _ := s.Resp.Header.Get("x-retry-hint"); string(got) != tt.hint {
				t.Errorf("x-retry-hint = %q, want %q", got, tt.hint)
			}
			if got := s.Resp.Header.Has("server"); got != tt.server {
				t.Errorf("server header present = %v, want %v", got, tt.server)
			}
			p.OnComplete(s)
			if slot := p.stateOf(s); *slot != nil {
				t.Errorf("state slot not cleared by OnComplete")
			}
		})
	}
}

func TestCostLimit(t *testing.T) {
	rules := `rules:
- name: heavy
  when: request.headers.exists(k, k.startsWith("x-")) && request.path.matches("^/(a|b)+c$")
  actions: [{set_header: {name: x-heavy, value: "1"}}]`
	p := load(t, rules, "", Options{CostLimit: 5})
	s := newStream(streamOpts{path: "/ababababababababc", headers: [][2]string{{"a", "1"}, {"b", "2"}, {"x-c", "3"}}})
	_, err := p.OnRequest(context.Background(), s)
	if !errors.Is(err, ErrCostLimit) {
		t.Fatalf("err = %v, want ErrCostLimit", err)
	}
	if !strings.Contains(err.Error(), `rule "heavy"`) {
		t.Errorf("error %q does not name the rule", err)
	}
	// Under the default limit the same rule runs.
	p = load(t, rules, "", Options{})
	s = newStream(streamOpts{path: "/ababababababababc", headers: [][2]string{{"x-c", "3"}}})
	if _, err := p.OnRequest(context.Background(), s); err != nil {
		t.Fatalf("default limit: %v", err)
	}
	if !s.Req.Header.Has("x-heavy") {
		t.Errorf("rule did not apply under the default limit")
	}
}

func TestActionErrors(t *testing.T) {
	tests := []struct {
		name  string
		rules string
		want  string
	}{
		{
			name: "value from a missing header",
			rules: `rules:
- name: copy
  actions: [{set_header: {name: x-b, expr: 'request.headers["x-missing"]'}}]`,
			want: `rule "copy": actions[0] set_header: no such key`,
		},
		{
			name: "relative rewrite",
			rules: `rules:
- name: rw
  actions: [{rewrite_path: '"relative"'}]`,
			want: "want an absolute path",
		},
		{
			name: "header injection",
			rules: `rules:
- name: inject
  actions: [{set_header: {name: x-b, expr: '"a\r\nb: c"'}}]`,
			want: "CR, LF or NUL",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := load(t, tt.rules, "", Options{})
			_, err := p.OnRequest(context.Background(), newStream(streamOpts{}))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// The deadline (here the stream's cancellation) is checked between rules,
// not before the first one: the watchdog times the call's start and end.
func TestDeadlineBetweenRules(t *testing.T) {
	p := load(t, `rules:
- name: a
  actions: [{set_header: {name: x-a, value: "1"}}]
- name: b
  actions: [{set_header: {name: x-b, value: "1"}}]`, "", Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s := newStream(streamOpts{})
	_, err := p.OnRequest(ctx, s)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), `rule "b"`) {
		t.Fatalf("err = %v, want context.Canceled before rule b", err)
	}
	if s.Req.Header.GetString("x-a") != "1" || s.Req.Header.GetString("x-b") != "" {
		t.Fatalf("x-a %q x-b %q, want only the first rule applied", s.Req.Header.GetString("x-a"), s.Req.Header.GetString("x-b"))
	}
}

func TestConfigRejected(t *testing.T) {
	_, err := NewRuntime(Options{}).Compile("x", []byte(`rules:
- name: a
  actions: [{remove_header: x-a}]`), []byte("[1, 2]"))
	if err == nil || !strings.Contains(err.Error(), "config") {
		t.Fatalf("err = %v, want a config error", err)
	}
}

// The cells must keep distinct values apart within one evaluation and never
// leak values of a previous evaluation into the next.
func TestManyLookupsInOneExpression(t *testing.T) {
	var parts, hdrs []string
	var want []string
	var hs [][2]string
	for i := 0; i < cellCount+8; i++ {
		n := "h" + string(rune('a'+i%26)) + strings.Repeat("x", i/26)
		hdrs = append(hdrs, n)
		parts = append(parts, `request.headers["`+n+`"]`)
		v := strings.Repeat(string(rune('A'+i%26)), 1+i%3)
		hs = append(hs, [2]string{n, v})
		want = append(want, v)
	}
	_ = hdrs
	rules := "rules:\n- name: join\n  actions: [{set_header: {name: x-all, expr: '" + strings.Join(parts, ` + "," + `) + "'}}]\n"
	p := load(t, rules, "", Options{})
	for round := 0; round < 3; round++ {
		s := newStream(streamOpts{headers: hs})
		if _, err := p.OnRequest(context.Background(), s); err != nil {
			t.Fatalf("Request: %v", err)
		}
		if got, _ := s.Req.Header.Get("x-all"); string(got) != strings.Join(want, ",") {
			t.Fatalf("round %d: x-all = %q, want %q", round, got, strings.Join(want, ","))
		}
		p.OnComplete(s)
	}
}

func TestClaimsFromJWTAuthn(t *testing.T) {
	p := load(t, `rules:
- name: sub
  actions: [{set_header: {name: x-sub, expr: 'string(jwt.claims[?"sub"].orValue("anonymous"))'}}]`, "", Options{})
	tests := []struct {
		name     string
		payloads []jwtauthn.Payload
		want     string
	}{
		{name: "no token", want: "anonymous"},
		{name: "verified token", payloads: []jwtauthn.Payload{{Provider: "idp", Key: "idp", Claims: map[string]any{"sub": "bob"}}}, want: "bob"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStream(streamOpts{})
			if tt.payloads != nil {
				s.Attrs.Claims = append(s.Attrs.Claims, tt.payloads...)
			}
			if _, err := p.OnRequest(context.Background(), s); err != nil {
				t.Fatal(err)
			}
			if got, _ := s.Req.Header.Get("x-sub"); string(got) != tt.want {
				t.Errorf("x-sub = %q, want %q", got, tt.want)
			}
		})
	}
}
