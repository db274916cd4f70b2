package etcdtest

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
)

// Relay forwards TCP connections to one etcd endpoint. Cut drops every
// relayed connection and refuses new ones until Heal: a client dialled
// through it loses etcd at once, as a crashed or partitioned MeshKit
// replica would, without closing anything itself (its leases then expire
// on the server after their TTL instead of being revoked). Heal before
// shutting such a client down if its shutdown needs etcd.
type Relay struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	cut   bool
	wg    sync.WaitGroup
}

// NewRelay starts a relay on 127.0.0.1 to endpoint (an http:// URL as
// StartEtcd returns); it is closed when the test ends.
func NewRelay(t testing.TB, endpoint string) *Relay {
	t.Helper()
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatalf("etcdtest: relay target %q: %v", endpoint, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdtest: relay listen: %v", err)
	}
	r := &Relay{ln: ln, target: u.Host, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.close)
	return r
}

// Endpoints is what a client dials instead of the etcd endpoint.
func (r *Relay) Endpoints() []string { return []string{"http://" + r.ln.Addr().String()} }

// Cut closes every relayed connection and refuses new ones until Heal.
func (r *Relay) Cut() {
	r.mu.Lock()
	r.cut = true
	for c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
}

// Heal relays new connections again.
func (r *Relay) Heal() {
	r.mu.Lock()
	r.cut = false
	r.mu.Unlock()
}

// close stops the relay for good and waits for its goroutines.
func (r *Relay) close() {
	r.mu.Lock()
	r.cut = true
	_ = r.ln.Close()
	for c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *Relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		cut := r.cut
		r.mu.Unlock()
		if cut {
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", r.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		r.mu.Lock()
		if r.cut {
			r.mu.Unlock()
			_ = c.Close()
			_ = up.Close()
			continue
		}
		r.conns[c], r.conns[up] = struct{}{}, struct{}{}
		r.wg.Add(2)
		r.mu.Unlock()
		go r.pipe(c, up)
		go r.pipe(up, c)
	}
}

// pipe copies one direction; the first side to end closes both.
func (r *Relay) pipe(dst, src net.Conn) {
	defer r.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
	r.mu.Lock()
	delete(r.conns, dst)
	delete(r.conns, src)
	r.mu.Unlock()
}
