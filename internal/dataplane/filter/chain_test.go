package filter

import (
	"context"
	"io"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// recorder is a filter that logs its calls and optionally stops.
type recorder struct {
	name string
	log  *[]string
	stop bool
}

func (r *recorder) OnRequest(s *Stream) Status {
	*r.log = append(*r.log, "req:"+r.name)
	if r.stop {
		s.Reply(403, "denied by "+r.name)
		return Stop
	}
	return Continue
}

func (r *recorder) OnResponse(s *Stream) { *r.log = append(*r.log, "resp:"+r.name) }

type completer struct{ recorder }

func (c *completer) OnComplete(*Stream) { *c.log = append(*c.log, "done:"+c.name) }

type terminal struct {
	log    *[]string
	status int
}

func (t *terminal) Serve(s *Stream) error {
	*t.log = append(*t.log, "terminal")
	r := s.LocalResponse()
	r.Status = t.status
	s.Resp = r
	return nil
}

func newStream() *Stream {
	s := &Stream{Ctx: context.Background(), Req: &message.Request{}}
	return s
}

func TestChainOrder(t *testing.T) {
	tests := []struct {
		name     string
		stopAt   int // -1: nobody stops
		override []Filter
		want     string
		status   int
	}{
		{name: "decode in order, encode in reverse", stopAt: -1,
			want: "req:a req:b req:c terminal resp:c resp:b resp:a done:b", status: 200},
		{name: "stop skips the rest and the terminal", stopAt: 1,
			want: "req:a req:b resp:a done:b", status: 403},
		{name: "route disables a filter", stopAt: -1, override: []Filter{nil, nil, Disabled},
			want: "req:a req:b terminal resp:b resp:a done:b", status: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log []string
			fs := []Filter{&recorder{name: "a", log: &log}, &completer{recorder{name: "b", log: &log}}, &recorder{name: "c", log: &log}}
			if tt.stopAt >= 0 {
				switch f := fs[tt.stopAt].(type) {
				case *recorder:
					f.stop = true
				case *completer:
					f.stop = true
				}
			}
			c := NewChain(&terminal{log: &log, status: 200}, fs...)
			s := newStream()
			if tt.override != nil {
				s.Route = &Route{Name: "r", Overrides: tt.override}
			}
			c.Run(s)
			c.Complete(s)
			if got := strings.Join(log, " "); got != tt.want {
				t.Fatalf("calls:\n got %s\nwant %s", got, tt.want)
			}
			if s.Resp.Status != tt.status {
				t.Fatalf("status %d, want %d", s.Resp.Status, tt.status)
			}
		})
	}
}

func TestReplyGRPC(t *testing.T) {
	s := newStream()
	s.Req.Header.Add("content-type", "application/grpc+proto")
	s.Reply(503, "no healthy upstream\n")
	if s.Resp.Status != 200 {
		t.Fatalf("gRPC local reply status %d, want 200", s.Resp.Status)
	}
	if v, _ := s.Resp.Header.Get("grpc-status"); string(v) != "14" {
		t.Fatalf("grpc-status %q, want 14", v)
	}
	if v, _ := s.Resp.Header.Get("grpc-message"); string(v) != "no healthy upstream" {
		t.Fatalf("grpc-message %q", v)
	}
	s2 := newStream()
	s2.Reply(404, "no route\n")
	b, _ := io.ReadAll(s2.Resp.Body)
	if s2.Resp.Status != 404 || string(b) != "no route\n" || s2.Resp.ContentLength != int64(len(b)) {
		t.Fatalf("plain reply: %d %q len %d", s2.Resp.Status, b, s2.Resp.ContentLength)
	}
}

func TestReplyDoesNotAllocate(t *testing.T) {
	s := newStream()
	s.Reply(429, "local_rate_limited\n") // warm the buffers
	allocs := testing.AllocsPerRun(100, func() {
		s.Reply(429, "local_rate_limited\n")
	})
	if allocs != 0 {
		t.Fatalf("Reply allocates %v times", allocs)
	}
}

type fakeFactory struct{ typ string }

func (f fakeFactory) ConfigType() string                     { return f.typ }
func (f fakeFactory) Build(*anypb.Any, *Env) (Filter, error) { return Disabled, nil }

func TestRegistryRejectsDuplicates(t *testing.T) {
	if _, err := NewRegistry(fakeFactory{"a.B"}, fakeFactory{"a.B"}); err == nil {
		t.Fatal("duplicate registration accepted")
	}
	r, err := NewRegistry(fakeFactory{"a.B"}, fakeFactory{"c.D"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Lookup("type.googleapis.com/a.B"); !ok {
		t.Fatal("lookup by type URL failed")
	}
	if got := strings.Join(r.Types(), ","); got != "a.B,c.D" {
		t.Fatalf("Types = %s", got)
	}
}

type passFilter struct{}

func (passFilter) OnRequest(*Stream) Status { return Continue }
func (passFilter) OnResponse(*Stream)       {}

type replyTerminal struct{}

func (replyTerminal) Serve(s *Stream) error {
	r := s.LocalResponse()
	r.Status = 200
	s.Resp = r
	return nil
}

// BenchmarkChainRun is the chain's own cost: four filters, each looked up
// through the route's overrides, in both phases, around a terminal.
func BenchmarkChainRun(b *testing.B) {
	c := NewChain(replyTerminal{}, passFilter{}, passFilter{}, passFilter{}, passFilter{})
	s := newStream()
	b.ReportAllocs()
	for b.Loop() {
		s.Resp = nil
		c.Run(s)
		c.Complete(s)
	}
}

// pathMatcher is a terminal that matches routes by path, counting calls,
// and records the route it serves.
type pathMatcher struct {
	routes map[string]*Route
	calls  int
	served *Route
}

func (m *pathMatcher) Match(req *message.Request) *Route {
	m.calls++
	return m.routes[string(req.Path)]
}

func (m *pathMatcher) Serve(s *Stream) error {
	m.served = s.Route
	return replyTerminal{}.Serve(s)
}

// rewriter changes the path and clears the route, as a DSL or Wasm rewrite
// does.
type rewriter struct{ to string }

func (r rewriter) OnRequest(s *Stream) Status {
	s.Req.SetPath(r.to)
	s.ClearRoute()
	return Continue
}
func (rewriter) OnResponse(*Stream) {}

func TestChainMatchesOnceAndAfterClearRoute(t *testing.T) {
	var log []string
	after := &Route{Name: "after", Overrides: []Filter{nil, &recorder{name: "override", log: &log}}}
	m := &pathMatcher{routes: map[string]*Route{"/before": {Name: "before"}, "/after": after}}

	c := NewChain(m, passFilter{}, &recorder{name: "listener", log: &log})
	s := newStream()
	s.Req.SetPath("/before")
	c.Run(s)
	if m.calls != 1 || m.served.Name != "before" {
		t.Fatalf("no rewrite: %d matches, served %q; want 1, before", m.calls, m.served.Name)
	}

	log = nil
	m.calls = 0
	c = NewChain(m, rewriter{to: "/after"}, &recorder{name: "listener", log: &log})
	s = newStream()
	s.Req.SetPath("/before")
	c.Run(s)
	if m.calls != 2 || m.served != after || s.Route != after {
		t.Fatalf("after ClearRoute: %d matches, served %v; want 2, the rewritten path's route", m.calls, m.served)
	}
	if got := strings.Join(log, " "); got != "req:override resp:override" {
		t.Fatalf("the filter after the rewrite ran %q; want the new route's override", got)
	}
	if s.RouteCleared() {
		t.Fatal("route still marked cleared after the rematch")
	}
}

func TestAttributesResetKeepCapacity(t *testing.T) {
	s := newStream()
	s.Attrs.Claims = append(s.Attrs.Claims, Claims{Provider: "idp", Key: "idp", Claims: map[string]any{"sub": "a"}})
	s.Reset()
	if len(s.Attrs.Claims) != 0 {
		t.Fatalf("claims survived Reset: %+v", s.Attrs.Claims)
	}
	if c := s.Attrs.Claims[:1]; c[0].Claims != nil {
		t.Fatal("Reset kept a reference to the previous stream's payload")
	}
	claims := map[string]any{"sub": "b"}
	allocs := testing.AllocsPerRun(100, func() {
		s.Reset()
		s.Attrs.Claims = append(s.Attrs.Claims, Claims{Provider: "idp", Claims: claims})
	})
	if allocs != 0 {
		t.Fatalf("publishing claims on a reused stream allocates %v times", allocs)
	}
}
