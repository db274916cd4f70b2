package testutil

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
)

// Ports handed out by Addr come from below Linux's default ephemeral range
// (32768-60999). Listening on port 0 and closing returns a port from that
// range, which every outgoing connection of every test package running in
// parallel also draws from: a load test's client socket can take the port
// before the proxy binds it, and the proxy then refuses its config. Below
// the range only listeners that name a port explicitly (tests using Addr,
// each checking the port is free) can collide.
const (
	portLo = 20000
	portHi = 32768
)

// given remembers the addresses this test binary handed out, so that two
// calls never return the same one even if the first was not bound yet.
var given = struct {
	sync.Mutex
	m map[string]bool
}{m: map[string]bool{}}

// Addr returns 127.0.0.1:PORT with PORT free right now, outside the
// ephemeral range and not returned before by this process. Use it where a
// config must name a listen address before something binds it; where the
// code under test accepts "127.0.0.1:0" and reports what it bound, prefer
// that.
func Addr(t testing.TB) string {
	t.Helper()
	for range 500 {
		addr := fmt.Sprintf("127.0.0.1:%d", portLo+rand.IntN(portHi-portLo))
		given.Lock()
		dup := given.m[addr]
		given.m[addr] = true
		given.Unlock()
		if dup {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		_ = ln.Close()
		return addr
	}
	t.Fatalf("testutil.Addr: no free port in %d-%d after 500 tries", portLo, portHi-1)
	return ""
}
