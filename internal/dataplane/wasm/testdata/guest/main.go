//go:build wasip1

// Command guest is the host tests' plugin. Its configuration picks what it
// does: "features" exercises the host functions (headers, bodies,
// properties, shared data, queues, metrics, tick); "loop", "oom" and "panic"
// misbehave in proxy_on_request_headers; "reject" refuses its configuration.
package main

import (
	"strconv"
	"strings"

	"github.com/omnirelay/omnirelay/sdk/proxywasm"
)

func init() {
	proxywasm.SetNewRootContext(func(uint32) proxywasm.RootContext { return &root{} })
}

func main() {}

type root struct {
	proxywasm.DefaultRootContext
	mode    string
	arg     string
	called  bool
	queue   uint32
	ticks   proxywasm.Counter
	hist    proxywasm.Histogram
	gauge   proxywasm.Gauge
	counter proxywasm.Counter
}

func (r *root) OnPluginStart(int) bool {
	cfg, err := proxywasm.GetPluginConfiguration()
	if err != nil {
		return false
	}
	r.mode, r.arg, _ = strings.Cut(strings.TrimSpace(string(cfg)), " ")
	switch r.mode {
	case "reject":
		return false
	case "tick", "tickcall":
		r.ticks = proxywasm.DefineCounterMetric("ticks")
		_ = proxywasm.SetTickPeriodMilliSeconds(5)
	case "queue":
		r.queue, _ = proxywasm.RegisterSharedQueue("q")
	}
	r.counter = proxywasm.DefineCounterMetric("requests")
	r.gauge = proxywasm.DefineGaugeMetric("last_path_len")
	r.hist = proxywasm.DefineHistogramMetric("header_count")
	return true
}

func (r *root) OnTick() {
	if r.mode == "tickcall" && !r.called {
		// A call-out from the root context, answered on the root context.
		r.called = true
		_, err := proxywasm.DispatchHTTPCall(r.arg, [][2]string{{":method", "GET"}, {":path", "/token"}, {":authority", r.arg}}, nil, nil, 1000,
			func(int, int, int) {
				hs, _ := proxywasm.GetHTTPCallResponseHeaders()
				body, _ := proxywasm.GetHTTPCallResponseBody(0, 1<<20)
				status := ""
				for _, h := range hs {
					if h[0] == ":status" {
						status = h[1]
					}
				}
				_ = proxywasm.SetSharedData("token", []byte(status+" "+string(body)), 0)
			})
		if err != nil {
			_ = proxywasm.SetSharedData("token", []byte("dispatch: "+err.Error()), 0)
		}
	}
	r.ticks.Increment(1)
	_ = proxywasm.SetSharedData("ticks", []byte(strconv.FormatUint(r.ticks.Value(), 10)), 0)
}

func (r *root) OnQueueReady(id uint32) {
	for {
		item, err := proxywasm.DequeueSharedQueue(id)
		if err != nil {
			return
		}
		_ = proxywasm.SetSharedData("dequeued", item, 0)
	}
}

func (r *root) NewHTTPContext(uint32) proxywasm.HTTPContext {
	switch r.mode {
	case "trailerpanic", "trailerreply":
		return &trailerStream{mode: r.mode}
	}
	return &stream{root: r}
}

// trailerStream exercises the host's rules for trailer callbacks (the
// other modes keep a context without trailer handlers, so that the host
// does not wrap their bodies).
type trailerStream struct {
	proxywasm.DefaultHTTPContext
	mode string
}

func (s *trailerStream) OnHTTPResponseTrailers(int) proxywasm.Action {
	if s.mode == "trailerpanic" {
		panic("guest panics in its trailers on purpose")
	}
	// The head is sent: a local response must be refused.
	err := proxywasm.SendHTTPResponse(500, nil, nil, -1)
	msg := "none"
	if err != nil {
		msg = err.Error()
	}
	_ = proxywasm.AddHTTPResponseTrailer("x-reply-err", msg)
	return proxywasm.ActionContinue
}

type stream struct {
	proxywasm.DefaultHTTPContext
	root *root
}

var sink [][]byte

func (s *stream) OnHTTPRequestHeaders(n int, eos bool) proxywasm.Action {
	switch s.root.mode {
	case "loop":
		for {
		}
	case "oom":
		for {
			sink = append(sink, make([]byte, 1<<20))
		}
	case "panic":
		panic("guest panics on purpose")
	case "slowstart":
	}
	r := s.root
	r.counter.Increment(1)
	r.hist.Record(uint64(n))
	path, _ := proxywasm.GetHTTPRequestHeader(":path")
	r.gauge.Set(int64(len(path)))
	if path == "/deny" {
		_ = proxywasm.SendHTTPResponse(418, [][2]string{{"x-why", "teapot"}}, []byte("no"), -1)
		return proxywasm.ActionPause
	}
	if path == "/foreign" {
		// Foreign functions: compress round trip, and a read-only declared
		// property set twice (the second refused).
		z, err := proxywasm.CallForeignFunction("compress", []byte("hello world!"))
		_ = proxywasm.AddHTTPRequestHeader("x-compress", hexOrErr(z, err))
		plain, err := proxywasm.CallForeignFunction("uncompress", z)
		_ = proxywasm.AddHTTPRequestHeader("x-uncompress", string(plain)+errText(err))
		_, err = proxywasm.CallForeignFunction("nope", nil)
		_ = proxywasm.AddHTTPRequestHeader("x-unknown", errText(err))
		// DeclarePropertyArguments{name: "my.prop", readonly: true}
		_, err = proxywasm.CallForeignFunction("declare_property", append([]byte{0x0a, 7}, "my.prop\x10\x01"...))
		_ = proxywasm.AddHTTPRequestHeader("x-declare", errText(err))
		err1 := proxywasm.SetProperty([]string{"my.prop"}, []byte("one"))
		err2 := proxywasm.SetProperty([]string{"my.prop"}, []byte("two"))
		v, _ := proxywasm.GetProperty([]string{"my.prop"})
		_ = proxywasm.AddHTTPRequestHeader("x-prop", string(v)+" "+errText(err1)+" "+errText(err2))
		return proxywasm.ActionContinue
	}
	if path == "/rewrite" {
		_ = proxywasm.ReplaceHTTPRequestHeader(":path", "/rewritten")
	}
	hs, _ := proxywasm.GetHTTPRequestHeaders()
	_ = proxywasm.AddHTTPRequestHeader("x-count", strconv.Itoa(len(hs)))
	_ = proxywasm.AddHTTPRequestHeader("x-eos", strconv.FormatBool(eos))
	_ = proxywasm.RemoveHTTPRequestHeader("x-remove-me")
	if v, err := proxywasm.GetProperty([]string{"source", "address"}); err == nil {
		_ = proxywasm.AddHTTPRequestHeader("x-source", string(v))
	}
	if v, err := proxywasm.GetProperty([]string{"plugin_name"}); err == nil {
		_ = proxywasm.AddHTTPRequestHeader("x-plugin", string(v))
	}
	_ = proxywasm.SetProperty([]string{"my", "prop"}, []byte("kept"))
	// Shared data with CAS: count requests across instances.
	for {
		v, cas, err := proxywasm.GetSharedData("hits")
		n := 0
		if err == nil {
			n, _ = strconv.Atoi(string(v))
		}
		if proxywasm.SetSharedData("hits", []byte(strconv.Itoa(n+1)), cas) == nil {
			break
		}
	}
	if id, err := proxywasm.ResolveSharedQueue("q"); err == nil {
		_ = proxywasm.EnqueueSharedQueue(id, []byte(path))
	}
	return proxywasm.ActionContinue
}

func (s *stream) OnHTTPRequestBody(size int, eos bool) proxywasm.Action {
	b, err := proxywasm.GetHTTPRequestBody(0, size)
	if err != nil {
		return proxywasm.ActionContinue
	}
	_ = proxywasm.ReplaceHTTPRequestBody([]byte(strings.ToUpper(string(b))))
	return proxywasm.ActionContinue
}

func (s *stream) OnHTTPResponseHeaders(int, bool) proxywasm.Action {
	st, _ := proxywasm.GetHTTPResponseHeader(":status")
	_ = proxywasm.AddHTTPResponseHeader("x-upstream-status", st)
	if v, err := proxywasm.GetProperty([]string{"my", "prop"}); err == nil {
		_ = proxywasm.AddHTTPResponseHeader("x-prop", string(v))
	}
	return proxywasm.ActionContinue
}

func (s *stream) OnHTTPResponseBody(size int, eos bool) proxywasm.Action {
	b, err := proxywasm.GetHTTPResponseBody(0, size)
	if err != nil {
		return proxywasm.ActionContinue
	}
	_ = proxywasm.ReplaceHTTPResponseBody(append(b, "+wasm"...))
	return proxywasm.ActionContinue
}

func errText(err error) string {
	if err != nil {
		return err.Error()
	}
	return "ok"
}

func hexOrErr(b []byte, err error) string {
	if err != nil {
		return err.Error()
	}
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}
