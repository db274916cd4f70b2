package dnsresolve

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// server is a real DNS server on 127.0.0.1 (UDP and TCP on one port)
// answering from a zone the test changes.
type server struct {
	addr     string
	mu       sync.Mutex
	zone     map[string][]rec // fqdn -> records
	servfail atomic.Bool
	queries  atomic.Int64
	tcp      atomic.Int64
}

type rec struct {
	addr netip.Addr
	ttl  uint32
}

func startServer(t *testing.T) *server {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: pc.LocalAddr().String(), zone: map[string][]rec{}}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if out := s.answer(buf[:n], true); out != nil {
				_, _ = pc.WriteTo(out, from)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.tcp.Add(1)
			var lb [2]byte
			if _, err := readFull(c, lb[:]); err == nil {
				q := make([]byte, int(lb[0])<<8|int(lb[1]))
				if _, err := readFull(c, q); err == nil {
					if out := s.answer(q, false); out != nil {
						_, _ = c.Write(append([]byte{byte(len(out) >> 8), byte(len(out))}, out...))
					}
				}
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { pc.Close(); l.Close(); wg.Wait() })
	return s
}

func (s *server) set(name string, rs ...rec) {
	s.mu.Lock()
	s.zone[name+"."] = rs
	s.mu.Unlock()
}

func (s *server) answer(q []byte, udp bool) []byte {
	s.queries.Add(1)
	var m dnsmessage.Message
	if err := m.Unpack(q); err != nil || len(m.Questions) != 1 {
		return nil
	}
	qq := m.Questions[0]
	m.Header.Response, m.Header.RecursionAvailable = true, true
	if s.servfail.Load() {
		m.Header.RCode = dnsmessage.RCodeServerFailure
		out, _ := m.Pack()
		return out
	}
	s.mu.Lock()
	rs, ok := s.zone[qq.Name.String()]
	s.mu.Unlock()
	if !ok {
		m.Header.RCode = dnsmessage.RCodeNameError
	}
	for _, r := range rs {
		h := dnsmessage.ResourceHeader{Name: qq.Name, Class: dnsmessage.ClassINET, TTL: r.ttl}
		switch {
		case r.addr.Is4() && qq.Type == dnsmessage.TypeA:
			h.Type = dnsmessage.TypeA
			m.Answers = append(m.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AResource{A: r.addr.As4()}})
		case r.addr.Is6() && qq.Type == dnsmessage.TypeAAAA:
			h.Type = dnsmessage.TypeAAAA
			m.Answers = append(m.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AAAAResource{AAAA: r.addr.As16()}})
		}
	}
	// Over UDP, big answers are truncated (no answers, TC set) so that
	// the client must retry over TCP.
	if udp && len(m.Answers) > 8 {
		m.Answers, m.Header.Truncated = nil, true
	}
	out, _ := m.Pack()
	return out
}

func a(s string) netip.Addr { return netip.MustParseAddr(s) }

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, a(s))
	}
	slices.SortFunc(out, func(x, y netip.Addr) int { return x.Compare(y) })
	return out
}

func TestResolve(t *testing.T) {
	s := startServer(t)
	s.set("v4.test", rec{a("10.0.0.2"), 30}, rec{a("10.0.0.1"), 10})
	s.set("dual.test", rec{a("10.0.0.3"), 30}, rec{a("fd00::3"), 20})
	var many []rec
	for i := range 20 {
		many = append(many, rec{netip.AddrFrom4([4]byte{10, 1, 0, byte(i)}), 60})
	}
	s.set("many.test", many...)
	r := &Resolver{Servers: []string{s.addr}, Hosts: map[string][]netip.Addr{"pinned.test": {a("192.0.2.1")}}}
	ctx := context.Background()
	tests := []struct {
		name   string
		host   string
		family Family
		want   []netip.Addr
		ttl    time.Duration
	}{
		{"A records, smallest TTL", "v4.test", V4Only, addrs("10.0.0.1", "10.0.0.2"), 10 * time.Second},
		{"auto falls back to A", "v4.test", Auto, addrs("10.0.0.1", "10.0.0.2"), 10 * time.Second},
		{"auto prefers AAAA", "dual.test", Auto, addrs("fd00::3"), 20 * time.Second},
		{"v4 preferred", "dual.test", V4Preferred, addrs("10.0.0.3"), 30 * time.Second},
		{"all", "dual.test", All, addrs("10.0.0.3", "fd00::3"), 20 * time.Second},
		{"truncated answer retried over TCP", "many.test", V4Only, func() []netip.Addr {
			var out []netip.Addr
			for _, r := range many {
				out = append(out, r.addr)
			}
			return out
		}(), time.Minute},
		{"hosts file first", "pinned.test", Auto, addrs("192.0.2.1"), 0},
		{"an IP is itself", "10.9.9.9", Auto, addrs("10.9.9.9"), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := r.Resolve(ctx, tc.host, tc.family)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Addrs, tc.want) || got.TTL != tc.ttl {
				t.Fatalf("Resolve(%s) = %v ttl %v, want %v ttl %v", tc.host, got.Addrs, got.TTL, tc.want, tc.ttl)
			}
		})
	}
	if s.tcp.Load() == 0 {
		t.Error("the truncated answer was not retried over TCP")
	}
	if _, err := r.Resolve(ctx, "missing.test", Auto); !errors.Is(err, ErrNoRecords) {
		t.Errorf("NXDOMAIN: %v, want ErrNoRecords", err)
	}
	if _, err := r.Resolve(ctx, "v4.test", V6Only); !errors.Is(err, ErrNoRecords) {
		t.Errorf("no AAAA: %v, want ErrNoRecords", err)
	}
}

func TestResolveFailover(t *testing.T) {
	s := startServer(t)
	s.set("svc.test", rec{a("10.0.0.7"), 5})
	// A port nothing listens on: the query is refused and the next
	// server answers.
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	dead := pc.LocalAddr().String()
	pc.Close()
	r := &Resolver{Servers: []string{dead, s.addr}, Hosts: map[string][]netip.Addr{}, Timeout: 500 * time.Millisecond}
	got, err := r.Resolve(context.Background(), "svc.test", V4Only)
	if err != nil || !slices.Equal(got.Addrs, addrs("10.0.0.7")) {
		t.Fatalf("failover: %v %v", got.Addrs, err)
	}
	s.servfail.Store(true)
	if _, err := r.Resolve(context.Background(), "svc.test", V4Only); err == nil || errors.Is(err, ErrNoRecords) {
		t.Fatalf("SERVFAIL from every server: %v, want a server error", err)
	}
}

func TestWatch(t *testing.T) {
	s := startServer(t)
	s.set("svc.test", rec{a("10.0.0.1"), 1})
	r := &Resolver{Servers: []string{s.addr}, Hosts: map[string][]netip.Addr{}, Timeout: 500 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	updates := make(chan []netip.Addr, 16)
	done := make(chan struct{})
	// The refresh rate is an hour: only the 1 s TTL can bring the change.
	go func() {
		defer close(done)
		r.Watch(ctx, "svc.test", WatchOptions{Family: V4Only, RefreshRate: time.Hour, RespectTTL: true,
			FailureBase: 100 * time.Millisecond, FailureMax: 200 * time.Millisecond}, func(as []netip.Addr) { updates <- as })
	}()
	defer func() { cancel(); <-done }()
	next := func(want ...string) {
		t.Helper()
		select {
		case got := <-updates:
			if !slices.Equal(got, addrs(want...)) {
				t.Fatalf("update %v, want %v", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no update to %v", want)
		}
	}
	next("10.0.0.1")
	s.set("svc.test", rec{a("10.0.0.1"), 1}, rec{a("10.0.0.2"), 1})
	next("10.0.0.1", "10.0.0.2")
	// A failing server keeps the last set (no update), and the recovery
	// is picked up at the failure retry rate.
	s.servfail.Store(true)
	s.set("svc.test", rec{a("10.0.0.3"), 1})
	select {
	case got := <-updates:
		t.Fatalf("update %v while resolution fails", got)
	case <-time.After(1500 * time.Millisecond):
	}
	s.servfail.Store(false)
	next("10.0.0.3")
}

func TestWatchRefreshRateWithoutTTL(t *testing.T) {
	s := startServer(t)
	s.set("svc.test", rec{a("10.0.0.1"), 3600})
	r := &Resolver{Servers: []string{s.addr}, Hosts: map[string][]netip.Addr{}}
	ctx, cancel := context.WithCancel(context.Background())
	updates := make(chan []netip.Addr, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Watch(ctx, "svc.test", WatchOptions{Family: V4Only, RefreshRate: 200 * time.Millisecond}, func(as []netip.Addr) { updates <- as })
	}()
	defer func() { cancel(); <-done }()
	<-updates
	s.set("svc.test", rec{a("10.0.0.9"), 3600})
	select {
	case got := <-updates:
		if !slices.Equal(got, addrs("10.0.0.9")) {
			t.Fatalf("update %v", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the 1 h TTL was respected although respect_dns_ttl is off")
	}
}
