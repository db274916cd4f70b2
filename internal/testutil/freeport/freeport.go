// Package freeport picks loopback addresses for tests that must name a
// listen address before something binds it (a proxy config, a MeshKit
// flag).
//
// The usual trick, listening on port 0 and closing, returns a port from the
// kernel's ephemeral range (32768-60999 on Linux), which every outgoing
// connection of every test package running in parallel also draws from: a
// load test's client socket can take the port before the proxy binds it,
// and the proxy then refuses its config. Ports here come from below that
// range, where only listeners that name them explicitly (tests using this
// package, each checking the port is free) can collide.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
)

const (
	lo = 20000
	hi = 32768 // start of Linux's default ephemeral range
)

// Addr returns 127.0.0.1:PORT with PORT free right now and outside the
// ephemeral range.
func Addr(t testing.TB) string {
	t.Helper()
	for range 200 {
		addr := fmt.Sprintf("127.0.0.1:%d", lo+rand.IntN(hi-lo))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		_ = ln.Close()
		return addr
	}
	t.Fatal("freeport: no free port in 20000-32767 after 200 tries")
	return ""
}
