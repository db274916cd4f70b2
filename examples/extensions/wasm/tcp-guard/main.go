//go:build wasip1

// Command tcp-guard is a Proxy-Wasm network (L4) filter for tcp listeners:
// it closes a connection whose client sends the configured forbidden word,
// rewrites "ping" to "PING" on the way upstream, prefixes what comes back
// with "[wasm] ", and counts connections and closes in the tcp_connections
// and tcp_closes metrics. Configuration lines: "deny: <word>"; "lines: true"
// holds the client's bytes back (ActionPause) until a whole line has
// arrived, so that a word split across reads is still seen; "loop: true"
// makes every data callback spin forever (to exercise the watchdog).
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o tcp-guard.wasm .
package main

import (
	"bytes"
	"strings"

	"github.com/omnirelay/omnirelay/sdk/proxywasm"
)

func init() {
	proxywasm.SetNewRootContext(func(uint32) proxywasm.RootContext { return &root{} })
}

func main() {}

type root struct {
	proxywasm.DefaultRootContext
	deny          []byte
	lines, loop   bool
	conns, closes proxywasm.Counter
}

func (r *root) OnPluginStart(int) bool {
	cfg, err := proxywasm.GetPluginConfiguration()
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(cfg), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch strings.TrimSpace(k) {
		case "deny":
			r.deny = []byte(strings.TrimSpace(v))
		case "lines":
			r.lines = strings.TrimSpace(v) == "true"
		case "loop":
			r.loop = strings.TrimSpace(v) == "true"
		}
	}
	r.conns = proxywasm.DefineCounterMetric("tcp_connections")
	r.closes = proxywasm.DefineCounterMetric("tcp_closes")
	return true
}

func (r *root) NewTCPContext(uint32) proxywasm.TCPContext { return &conn{root: r} }

type conn struct {
	proxywasm.DefaultTCPContext
	root *root
}

func (c *conn) OnNewConnection() proxywasm.Action {
	c.root.conns.Increment(1)
	return proxywasm.ActionContinue
}

func (c *conn) OnDownstreamData(size int, eos bool) proxywasm.Action {
	for c.root.loop {
	}
	if size == 0 {
		return proxywasm.ActionContinue
	}
	data, err := proxywasm.GetDownstreamData(0, size)
	if err != nil {
		proxywasm.LogError("tcp-guard: " + err.Error())
		return proxywasm.ActionContinue
	}
	if c.root.lines && !eos && data[len(data)-1] != '\n' {
		return proxywasm.ActionPause // shown again with the next bytes
	}
	if len(c.root.deny) > 0 && bytes.Contains(data, c.root.deny) {
		_ = proxywasm.CloseConnection()
		return proxywasm.ActionPause
	}
	if bytes.Contains(data, []byte("ping")) {
		_ = proxywasm.ReplaceDownstreamData(bytes.ReplaceAll(data, []byte("ping"), []byte("PING")))
	}
	return proxywasm.ActionContinue
}

func (c *conn) OnUpstreamData(size int, _ bool) proxywasm.Action {
	if size == 0 {
		return proxywasm.ActionContinue
	}
	data, err := proxywasm.GetUpstreamData(0, size)
	if err != nil {
		return proxywasm.ActionContinue
	}
	_ = proxywasm.ReplaceUpstreamData(append([]byte("[wasm] "), data...))
	return proxywasm.ActionContinue
}

func (c *conn) OnDownstreamClose(proxywasm.PeerType) { c.root.closes.Increment(1) }
