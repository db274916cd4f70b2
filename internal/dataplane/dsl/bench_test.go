package dsl

import (
	"context"
	"testing"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// addHeaderRules is the benchmark rule of issue 5: add a header when a
// condition over the request holds.
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

func TestAddHeaderDoesNotAllocate(t *testing.T) {
	p := load(t, addHeaderRules, "", Options{})
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
	if got, _ := req.Header.Get("x-added"); string(got) != "1" {
		t.Fatalf("x-added = %q", got)
	}
	if n := testing.AllocsPerRun(200, run); n != 0 {
		t.Errorf("allocations per request = %v, want 0", n)
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
