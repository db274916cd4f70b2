package dsl

import (
	"context"
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

const fuzzRules = `rules:
- name: echo
  actions:
  - set_header: {name: x-echo, expr: 'request.headers.get(config["h"])'}
  - set_header: {name: x-query, expr: 'request.query.get("q")'}
  - set_metadata: {key: n, expr: 'string(size(request.headers))'}
- name: cond
  when: '"x-a" in request.headers && request.path.startsWith("/a") || request.query["q"].contains("z")'
  actions: [{rewrite_path: '"/r" + request.path'}]
`

// FuzzRequest runs a rule set over arbitrary request parts: no panic, and
// the values the rules read are the ones in the request.
func FuzzRequest(f *testing.F) {
	f.Add("/a/b", "q=1&r=2", "x-a", "v")
	f.Add("/", "", "X-A", "")
	f.Add("/az", "q=z&q=y", "x-b", "a\xffb")
	f.Add("/a?", "=&&q", "x-a", strings.Repeat("v", 300))
	p, err := NewRuntime(Options{}).Compile("fuzz", []byte(fuzzRules), []byte("h: x-a"))
	if err != nil {
		f.Fatal(err)
	}
	p.state = testState{}.slot
	f.Fuzz(func(t *testing.T, path, query, name, value string) {
		if strings.ContainsAny(path+query, "?#") || !strings.HasPrefix(path, "/") {
			return
		}
		if strings.ContainsAny(value, "\r\n\x00") || name == "" {
			return
		}
		var req message.Request
		full := path
		if query != "" {
			full += "?" + query
		}
		req.SetMethod("GET")
		req.SetPath(full)
		req.Header.Add(name, value)
		req.Header.Add("other", "o")
		s := &filter.Stream{Ctx: context.Background(), Req: &req}
		if _, err := p.OnRequest(context.Background(), s); err != nil {
			return // a failing expr is an error the watchdog handles
		}
		defer p.OnComplete(s)
		want := ""
		if strings.EqualFold(name, "x-a") {
			want = value
		}
		if got, _ := req.Header.Get("x-echo"); string(got) != want {
			t.Fatalf("x-echo = %q, want %q", got, want)
		}
	})
}
