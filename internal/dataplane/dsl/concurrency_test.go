package dsl_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"

	"github.com/omnirelay/omnirelay/internal/dataplane/dsl"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// One plugin serves many streams at once: pooled states, cells and
// metadata must never leak from one stream into another.
func TestConcurrentStreams(t *testing.T) {
	rules := `rules:
- name: copy
  actions:
  - set_metadata: {key: id, expr: 'request.headers.get("x-id")'}
  - set_header: {name: x-copy, expr: 'request.headers["x-id"] + "|" + request.query.get("q") + "|" + request.path'}
- name: back
  phase: response
  actions: [{set_header: {name: x-id-back, expr: 'metadata["id"] + "|" + string(response.status)'}}]`
	// A deadline no loaded -race machine reaches: the test is about state
	// isolation, not timing (10ms, the default, was exceeded under load).
	flt := buildFilter(t, nil, &extv1.Extension{Package: signedPackage(t, rules), Deadline: durationpb.New(5 * time.Second)}, dsl.Options{})
	c := filter.NewChain(echoCopy{}, flt)
	const workers, perWorker = 8, 300
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s filter.Stream
			var req message.Request
			for i := range perWorker {
				id := fmt.Sprintf("w%d-%d-%s", w, i, strings.Repeat("x", i%17))
				req.Reset()
				req.SetMethod("GET")
				req.SetPath("/p/" + id + "?q=" + id)
				req.SetAuthority("example.com")
				req.Header.Add("x-id", id)
				s.Reset()
				s.Ctx, s.Req = context.Background(), &req
				c.Run(&s)
				want := id + "|" + id + "|/p/" + id
				got, _ := s.Resp.Header.Get("x-seen-copy")
				back, _ := s.Resp.Header.Get("x-id-back")
				if string(got) != want || string(back) != id+"|200" {
					errs <- fmt.Errorf("stream %s: x-copy %q (want %q), x-id-back %q", id, got, want, back)
					c.Complete(&s)
					return
				}
				c.Complete(&s)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// echoCopy answers 200 with the x-copy request header it saw.
type echoCopy struct{}

func (echoCopy) Serve(s *filter.Stream) error {
	r := s.LocalResponse()
	r.Status = 200
	if v, ok := s.Req.Header.Get("x-copy"); ok {
		r.Header.SetBytes("x-seen-copy", v)
	}
	s.Resp = r
	return nil
}
