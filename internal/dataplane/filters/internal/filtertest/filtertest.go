// Package filtertest holds the test doubles the built-in filters' tests share:
// a recording Terminal, stream builders and
// helpers to pack typed config. It is imported by tests only.
package filtertest

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// Terminal answers every request with Status (200 when zero) and Header,
// counting calls. OnServe, when set, runs first (to inspect the request).
type Terminal struct {
	Status  int
	Header  [][2]string
	OnServe func(s *filter.Stream)
	calls   atomic.Int64
}

// Serve implements filter.Terminal.
func (t *Terminal) Serve(s *filter.Stream) error {
	t.calls.Add(1)
	if t.OnServe != nil {
		t.OnServe(s)
	}
	r := s.LocalResponse()
	r.Status = t.Status
	if r.Status == 0 {
		r.Status = 200
	}
	for _, kv := range t.Header {
		r.Header.Add(kv[0], kv[1])
	}
	s.Resp = r
	return nil
}

// Calls returns how many times Serve ran.
func (t *Terminal) Calls() int64 { return t.calls.Load() }

// NewStream returns a stream for method and path with the given header
// name/value pairs.
func NewStream(method, path string, headers ...string) *filter.Stream {
	s := &filter.Stream{Ctx: context.Background(), Req: &message.Request{}, Start: time.Now()}
	Fill(s, method, path, headers...)
	return s
}

// Fill resets s and loads a request into it, for benchmarks that reuse one
// stream.
func Fill(s *filter.Stream, method, path string, headers ...string) {
	req := s.Req
	if req == nil {
		req = &message.Request{}
	}
	ctx := s.Ctx
	if ctx == nil {
		ctx = context.Background()
	}
	s.Reset()
	req.Reset()
	s.Ctx, s.Req, s.Start = ctx, req, time.Now()
	req.SetMethod(method)
	req.SetScheme("http")
	req.SetAuthority("example.com")
	req.SetPath(path)
	req.ProtoMajor, req.ProtoMinor = 1, 1
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
}

// Any packs m, failing the test on error.
func Any(tb testing.TB, m proto.Message) *anypb.Any {
	tb.Helper()
	a, err := anypb.New(m)
	if err != nil {
		tb.Fatalf("anypb.New: %v", err)
	}
	return a
}

// Values returns every value of name in h, in order.
func Values(h *message.Headers, name string) []string {
	var out []string
	for i := 0; i < h.Len(); i++ {
		if f := h.At(i); string(f.Name) == name {
			out = append(out, string(f.Value))
		}
	}
	return out
}

// Body reads the whole response body ("" when nil).
func Body(tb testing.TB, r *message.Response) string {
	tb.Helper()
	if r == nil || r.Body == nil {
		return ""
	}
	var out []byte
	buf := make([]byte, 512)
	for {
		n, err := r.Body.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			break
		}
	}
	return string(out)
}
