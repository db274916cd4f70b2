package extension_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// goRuntime is a real, if small, runtime for the tests: its payload is a
// header name and its config the value; the plugin adds that header to each
// request and "x-ext-gen: <instance generation>" to each response. The
// request header x-mode makes a call misbehave: error, panic, deny (local
// 403), spin (runs until the ctx deadline, like an interrupted guest) or
// stuck (ignores ctx, like native code). A payload starting with "broken:"
// fails all requests of generation 1 (the first Load of a key) only, which
// the reload policy should cure.
type goRuntime struct {
	kind     string
	loads    atomic.Int64
	closes   atomic.Int64
	open     atomic.Int64 // streams between OnRequest and OnComplete
	refuse   atomic.Bool  // Load fails
	keeps    bool         // plugins keep their deadline (Capabilities.KeepsDeadline): "stuck" reports its late return itself
	skipResp bool         // plugins skip the response phase of "no-response" streams (Capabilities.SkipsResponse)
	loadSeen chan struct{}
}

func newGoRuntime() *goRuntime {
	return &goRuntime{kind: extpkg.KindNative, loadSeen: make(chan struct{}, 100)}
}

func (r *goRuntime) Kind() string   { return r.kind }
func (r *goRuntime) ABIs() []string { return []string{"go-test/1"} }

func (r *goRuntime) Load(_ context.Context, m extpkg.Manifest, payload, config []byte) (extension.Plugin, error) {
	if r.refuse.Load() {
		return nil, errors.New("refused by the test")
	}
	if strings.Contains(string(config), " ") {
		return nil, fmt.Errorf("config %q: value must not contain spaces", config)
	}
	gen := r.loads.Add(1)
	select {
	case r.loadSeen <- struct{}{}:
	default:
	}
	name, broken := strings.CutPrefix(string(payload), "broken:")
	return &goPlugin{rt: r, header: name, value: string(config), gen: gen, broken: broken && gen == 1}, nil
}

type goPlugin struct {
	rt            *goRuntime
	header, value string
	gen           int64
	broken        bool
}

type goState struct{ mode string }

func (p *goPlugin) OnRequest(ctx context.Context, s *filter.Stream) (extension.Action, error) {
	slot := extension.StreamState(s)
	if slot == nil || *slot != nil {
		return extension.Continue, errors.New("stream state slot missing or not fresh")
	}
	p.rt.open.Add(1)
	mode := s.Req.Header.GetString("x-mode")
	*slot = &goState{mode: mode}
	if p.broken {
		return extension.Continue, errors.New("broken generation")
	}
	switch mode {
	case "error":
		return extension.Continue, errors.New("asked to fail")
	case "panic":
		panic("asked to panic")
	case "deny":
		s.Reply(403, "denied by plugin")
		return extension.Stop, nil
	case "spin":
		<-ctx.Done()
		return extension.Continue, ctx.Err()
	case "stuck":
		dl, _ := ctx.Deadline()
		time.Sleep(time.Until(dl) + 2*time.Millisecond)
		if p.rt.keeps {
			if err := ctx.Err(); err != nil {
				return extension.Continue, err
			}
		}
	}
	s.Req.Header.Set(p.header, p.value)
	return extension.Continue, nil
}

// Describe implements extension.Describer: the plugin keeps its deadline
// when the runtime was made so (keeps); with skipResp, a "no-response"
// stream needs no OnResponse.
func (p *goPlugin) Describe() extension.Capabilities {
	c := extension.Capabilities{Phases: extension.AllPhases, KeepsDeadline: p.rt.keeps}
	if p.rt.skipResp {
		c.SkipsResponse = func(state any, _ *filter.Stream) bool {
			st, _ := state.(*goState)
			return st != nil && st.mode == "no-response"
		}
	}
	return c
}

func (p *goPlugin) OnResponse(_ context.Context, s *filter.Stream) error {
	st := (*extension.StreamState(s)).(*goState)
	if st.mode == "error-response" {
		return errors.New("asked to fail the response")
	}
	if s.Resp != nil {
		s.Resp.Header.Set("x-ext-gen", fmt.Sprint(p.gen))
	}
	return nil
}

func (p *goPlugin) OnComplete(s *filter.Stream) {
	if slot := extension.StreamState(s); slot != nil && *slot != nil {
		p.rt.open.Add(-1)
	}
}

func (p *goPlugin) Close() error {
	p.rt.closes.Add(1)
	return nil
}

// testKey returns a fixed key pair.
func testKey(n byte) (ed25519.PublicKey, ed25519.PrivateKey) {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = n + byte(i)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	return priv.Public().(ed25519.PublicKey), priv
}

// pkg packs and signs a go-test package whose payload is payload.
func pkg(t testing.TB, key byte, m extpkg.Manifest, payload string) []byte {
	t.Helper()
	if m.Name == "" {
		m = extpkg.Manifest{Name: "add-header", Version: "1.0.0", Kind: extpkg.KindNative, ABI: "go-test/1"}
	}
	b, err := extpkg.Pack(m, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	_, priv := testKey(key)
	b, err = extpkg.Sign(b, signing.NewSigner(priv))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func extAny(t testing.TB, x *extv1.Extension) *anypb.Any {
	t.Helper()
	if x.Deadline == nil {
		// Generous: a loaded CI machine under -race must not turn a
		// healthy call into a timeout.
		x.Deadline = durationpb.New(time.Second)
	}
	if x.Name == "" {
		x.Name = "add-header"
	}
	a, err := anypb.New(x)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func newFactory(t testing.TB, rts ...extension.Runtime) *extension.Factory {
	t.Helper()
	pub, _ := testKey(1)
	m, err := extension.NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := extension.NewFactory(extension.Options{
		Trust: signing.NewVerifier(pub), Runtimes: rts, Metrics: m,
		Capabilities: func() []string { return []string{"envoy.filters.http.router"} },
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// terminal answers 200, counting the requests that reached it.
type terminal struct{ calls atomic.Int64 }

func (t *terminal) Serve(s *filter.Stream) error {
	t.calls.Add(1)
	r := s.LocalResponse()
	r.Status = 200
	r.Header.Set("x-seen-added", s.Req.Header.GetString("x-added"))
	s.Resp = r
	return nil
}

// run sends one request with the given x-mode through chain and returns
// the response status and headers of interest.
func run(c *filter.Chain, mode string) (status int, added, gen string) {
	s := &filter.Stream{Ctx: context.Background(), Req: &message.Request{}, Start: time.Now()}
	s.Req.SetMethod("GET")
	s.Req.SetPath("/")
	s.Req.SetAuthority("example.com")
	if mode != "" {
		s.Req.Header.Set("x-mode", mode)
	}
	c.Run(s)
	defer c.Complete(s)
	return s.Resp.Status, s.Resp.Header.GetString("x-seen-added"), s.Resp.Header.GetString("x-ext-gen")
}

func verifier(keys ...ed25519.PublicKey) *signing.Verifier { return signing.NewVerifier(keys...) }

func newStream(ctx context.Context, mode string) *filter.Stream {
	s := &filter.Stream{Ctx: ctx, Req: &message.Request{}, Start: time.Now()}
	s.Req.SetMethod("GET")
	s.Req.SetPath("/")
	s.Req.SetAuthority("example.com")
	if mode != "" {
		s.Req.Header.Set("x-mode", mode)
	}
	return s
}
