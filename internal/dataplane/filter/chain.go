package filter

import (
	"io"
)

var eof = io.EOF

// Disabled is the filter a route's Overrides hold to switch a listener
// filter off for that route.
var Disabled Filter = disabled{}

type disabled struct{}

func (disabled) OnRequest(*Stream) Status { return Continue }
func (disabled) OnResponse(*Stream)       {}

// Terminal is the last element of a chain: it produces the response (the
// router forwarding upstream, or an in-process handler). It sets s.Resp, or
// returns an error that the chain turns into a local reply.
type Terminal interface {
	Serve(s *Stream) error
}

// Chain is an immutable, ordered list of filters ending in a Terminal.
type Chain struct {
	filters   []Filter
	terminal  Terminal
	matcher   Matcher // the terminal, when it chooses routes (the router)
	completer []int   // indexes of filters implementing Completer
	routed    func(*Stream)
}

// OnRouted sets f to run once per stream right after the route is matched,
// before the first filter (the connection manager starts the request's
// trace there, when route-level sampling and tenants are known). Call it
// while building the chain, before it serves.
func (c *Chain) OnRouted(f func(*Stream)) { c.routed = f }

// MaxFilters is the longest chain NewChain accepts (per-stream state slots).
const MaxFilters = maxStateful

// NewChain builds a chain. The slice is copied. Chains longer than
// MaxFilters are rejected by the config compiler before reaching here; a
// longer chain panics because its filters would lose per-stream state.
func NewChain(terminal Terminal, filters ...Filter) *Chain {
	if len(filters) > MaxFilters {
		panic("filter: chain longer than MaxFilters")
	}
	c := &Chain{filters: append([]Filter(nil), filters...), terminal: terminal}
	c.matcher, _ = terminal.(Matcher)
	for i, f := range c.filters {
		if _, ok := f.(Completer); ok {
			c.completer = append(c.completer, i)
		}
	}
	return c
}

// Len returns the number of filters before the terminal.
func (c *Chain) Len() int { return len(c.filters) }

// Run matches the route (when the terminal is a Matcher), runs the request
// phase, the terminal, then the response phase. On return s.Resp is set: the
// caller writes it downstream and then calls Complete. Without a Matcher the
// caller's s.Route is used as is.
func (c *Chain) Run(s *Stream) {
	if c.matcher != nil {
		s.Route, s.routeStale = c.matcher.Match(s.Req), false
	}
	if c.routed != nil {
		c.routed(s)
	}
	n := len(c.filters)
	ran := n // number of filters whose OnRequest ran
	for i := 0; i < n; i++ {
		f := c.filter(s, i)
		if f.OnRequest(s) == Stop {
			ran = i + 1
			if s.Resp == nil {
				s.Reply(500, "filter stopped without a response\n")
			}
			c.respond(s, ran-1)
			return
		}
	}
	if s.routeStale {
		c.rematch(s)
	}
	if err := c.terminal.Serve(s); err != nil || s.Resp == nil {
		if s.Resp == nil {
			s.Reply(502, "upstream error\n")
		}
	}
	c.respond(s, ran)
}

// respond runs OnResponse on filters [0, upto) in reverse order.
func (c *Chain) respond(s *Stream, upto int) {
	for i := upto - 1; i >= 0; i-- {
		c.filter(s, i).OnResponse(s)
	}
}

// Complete runs OnComplete on every filter that implements Completer.
func (c *Chain) Complete(s *Stream) {
	for _, i := range c.completer {
		c.filters[i].(Completer).OnComplete(s)
	}
}

func (c *Chain) filter(s *Stream, i int) Filter {
	if s.routeStale {
		c.rematch(s)
	}
	if r := s.Route; r != nil && i < len(r.Overrides) {
		if o := r.Overrides[i]; o != nil {
			return o
		}
	}
	return c.filters[i]
}

// rematch matches the route again after a filter cleared it.
func (c *Chain) rematch(s *Stream) {
	if s.routeStale && c.matcher != nil {
		s.Route, s.routeStale = c.matcher.Match(s.Req), false
	}
}
