package dsl

import (
	"context"
	"testing"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// addHeaderRules is the add-header benchmark rule (docs/benchmarks.md):
// add a header when a condition over the request holds.
const addHeaderRules = `rules:
- name: add-header
  when: request.path.startsWith("/api") && request.headers.get("x-tenant") == "acme"
  actions: [{set_header: {name: x-added, value: "1"}}]`

// benchStream fills a stream the way a codec does for each request,
// reusing the message storage.
func benchStream(s *filter.Stream, req *message.Request) {
	req.Reset()
	req.SetMethod("GET")
	req.SetPath("/api/items?page=2")
	req.SetScheme("http")
	req.SetAuthority("example.com")
	req.Header.Add("user-agent", "bench")
	req.Header.Add("accept", "*/*")
	req.Header.Add("x-tenant", "acme")
	s.Reset()
	s.Ctx = context.Background()
	s.Req = req
}

// The common request path allocates nothing: the add-header rule of the
// benchmark and the other lookups docs/dsl.md lists as allocation-free.
func TestCommonPathDoesNotAllocate(t *testing.T) {
	tests := []struct {
		name, rules string
	}{
		{"add-header", addHeaderRules},
		{"header value from expression", `rules: [{name: a, actions: [{set_header: {name: x-b, expr: 'request.headers.get("x-tenant")'}}]}]`},
		{"query and method", `rules: [{name: a, when: 'request.query.get("page") == "2" && request.method == "GET"', actions: [{remove_header: accept}]}]`},
		{"remote ip and host", `rules: [{name: a, when: 'connection.remote_ip != "10.0.0.1" && request.host.endsWith(".com")', actions: [{set_header: {name: x-a, value: "1"}}]}]`},
		{"literal metadata read back", `rules: [{name: a, actions: [{set_metadata: {key: k, value: v}}]}, {name: b, when: 'metadata.get("k") == "v"', actions: [{set_header: {name: x-a, value: "1"}}]}]`},
		{"in and size", `rules: [{name: a, when: '"x-tenant" in request.headers && size(request.headers) < 10', actions: [{set_header: {name: x-a, value: "1"}}]}]`},
		{"deny", `rules: [{name: a, when: 'request.path.startsWith("/api")', actions: [{deny: {status: 403, body: "no"}}]}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := load(t, tt.rules, "", Options{})
			var s filter.Stream
			var req message.Request
			ctx := context.Background()
			run := func() {
				benchStream(&s, &req)
				if _, err := p.OnRequest(ctx, &s); err != nil {
					t.Fatal(err)
				}
				p.OnComplete(&s)
			}
			run()
			if n := testing.AllocsPerRun(200, run); n != 0 {
				t.Errorf("allocations per request = %v, want 0", n)
			}
		})
	}
}

func BenchmarkRequest(b *testing.B) {
	ctx := context.Background()
	b.Run("no-extension", func(b *testing.B) {
		var s filter.Stream
		var req message.Request
		b.ReportAllocs()
		for b.Loop() {
			benchStream(&s, &req)
		}
	})
	rules := []struct{ name, rules string }{
		{"add-header", addHeaderRules},
		{"add-header-expr", `rules:
- name: add-header
  when: request.path.startsWith("/api")
  actions: [{set_header: {name: x-tenant-echo, expr: 'request.headers["x-tenant"]'}}]`},
		{"deny-miss-5-rules", `rules:
- {name: r1, when: 'request.method == "DELETE"', actions: [{deny: {}}]}
- {name: r2, when: 'request.path.startsWith("/admin")', actions: [{deny: {}}]}
- {name: r3, when: 'request.headers[?"x-block"].orValue("") == "1"', actions: [{deny: {}}]}
- {name: r4, when: 'request.host == "blocked.example.com"', actions: [{deny: {}}]}
- {name: r5, when: 'request.query[?"debug"].orValue("") == "1"', actions: [{deny: {}}]}`},
	}
	for _, r := range rules {
		b.Run(r.name, func(b *testing.B) {
			p := load(b, r.rules, "", Options{})
			var s filter.Stream
			var req message.Request
			b.ReportAllocs()
			for b.Loop() {
				benchStream(&s, &req)
				if _, err := p.OnRequest(ctx, &s); err != nil {
					b.Fatal(err)
				}
				p.OnComplete(&s)
			}
		})
	}
}
