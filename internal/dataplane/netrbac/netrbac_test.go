package netrbac

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
)

func peer(prefix string) *rbacconfv3.Principal {
	return &rbacconfv3.Principal{Identifier: &rbacconfv3.Principal_Authenticated_{Authenticated: &rbacconfv3.Principal_Authenticated{
		PrincipalName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: prefix}}}}}
}

func cidr(a string, bits uint32) *rbacconfv3.Principal {
	return &rbacconfv3.Principal{Identifier: &rbacconfv3.Principal_DirectRemoteIp{DirectRemoteIp: &corev3.CidrRange{AddressPrefix: a, PrefixLen: wrapperspb.UInt32(bits)}}}
}

func anyPerm() []*rbacconfv3.Permission {
	return []*rbacconfv3.Permission{{Rule: &rbacconfv3.Permission_Any{Any: true}}}
}

func build(t *testing.T, pb *netrbacv3.RBAC, stats filter.Stats) *Policy {
	t.Helper()
	a, err := anypb.New(pb)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Build("l4", a, stats, nil)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return p
}

type stats struct {
	mu sync.Mutex
	n  map[string]int
}

type ctr struct {
	s    *stats
	name string
}

func (c ctr) Inc() { c.s.mu.Lock(); c.s.n[c.name]++; c.s.mu.Unlock() }

func (s *stats) Counter(name string, _ ...string) filter.Counter { return ctr{s, name} }

func (s *stats) get(name string) int { s.mu.Lock(); defer s.mu.Unlock(); return s.n[name] }

func TestAllow(t *testing.T) {
	deny := build(t, &netrbacv3.RBAC{StatPrefix: "l4", Rules: &rbacconfv3.RBAC{Action: rbacconfv3.RBAC_DENY, Policies: map[string]*rbacconfv3.Policy{
		"blocked-net": {Permissions: anyPerm(), Principals: []*rbacconfv3.Principal{cidr("192.168.0.0", 16)}},
	}}}, nil)
	allow := build(t, &netrbacv3.RBAC{StatPrefix: "l4", Rules: &rbacconfv3.RBAC{Action: rbacconfv3.RBAC_ALLOW, Policies: map[string]*rbacconfv3.Policy{
		"shop":        {Permissions: anyPerm(), Principals: []*rbacconfv3.Principal{peer("spiffe://mesh.local/ns/shop/")}},
		"header-only": {Permissions: anyPerm(), Principals: []*rbacconfv3.Principal{{Identifier: &rbacconfv3.Principal_Header{Header: &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}}}}},
	}}}, nil)
	src := netip.MustParseAddrPort("10.0.0.1:5000")
	tests := []struct {
		name string
		p    *Policy
		c    Conn
		want bool
	}{
		{name: "deny: other network", p: deny, c: Conn{Source: src}, want: true},
		{name: "deny: blocked network", p: deny, c: Conn{Source: netip.MustParseAddrPort("192.168.3.4:1")}, want: false},
		{name: "allow: shop peer", p: allow, c: Conn{Source: src, PeerIdentity: "spiffe://mesh.local/ns/shop/sa/web"}, want: true},
		{name: "allow: other namespace", p: allow, c: Conn{Source: src, PeerIdentity: "spiffe://mesh.local/ns/ops/sa/x"}, want: false},
		{name: "allow: plaintext (header principal never matches at L4)", p: allow, c: Conn{Source: src}, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Allow(tt.c); got != tt.want {
				t.Fatalf("Allow = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestBuildRejects(t *testing.T) {
	for _, pb := range []*netrbacv3.RBAC{
		{StatPrefix: "x", EnforcementType: netrbacv3.RBAC_CONTINUOUS},
		{StatPrefix: "x", Rules: &rbacconfv3.RBAC{Action: rbacconfv3.RBAC_LOG}},
	} {
		a, _ := anypb.New(pb)
		if _, err := Build("x", a, nil, nil); err == nil {
			t.Errorf("accepted %v", pb)
		}
	}
}

// pki is a test CA issuing SPIFFE client certificates.
type pki struct {
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	pool  *x509.CertPool
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &pki{ca: ca, caKey: key, pool: pool}
}

func (p *pki) issue(t *testing.T, spiffeID string, server bool) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	if spiffeID != "" {
		u, _ := url.Parse(spiffeID)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// serveGuarded is the listener seam in miniature: accept, TLS handshake,
// Allow on the connection's facts, close when denied, echo otherwise.
func serveGuarded(t *testing.T, p *Policy, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := tls.Server(c, cfg)
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if err := tc.Handshake(); err != nil {
					return
				}
				st := tc.ConnectionState()
				conn := Conn{
					Source: netip.MustParseAddrPort(c.RemoteAddr().String()),
					Dest:   netip.MustParseAddrPort(c.LocalAddr().String()),
					SNI:    st.ServerName,
				}
				if len(st.PeerCertificates) > 0 && len(st.PeerCertificates[0].URIs) > 0 {
					conn.PeerIdentity = st.PeerCertificates[0].URIs[0].String()
				}
				if !p.Allow(conn) {
					return // closed at accept: nothing read, nothing written
				}
				_, _ = io.Copy(tc, io.LimitReader(tc, 4))
			}()
		}
	}()
	return ln.Addr().String()
}

func TestMTLSConnections(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // runs after the server's cleanup
	ca := newPKI(t)
	st := &stats{n: map[string]int{}}
	p := build(t, &netrbacv3.RBAC{StatPrefix: "l4",
		Rules: &rbacconfv3.RBAC{Action: rbacconfv3.RBAC_ALLOW, Policies: map[string]*rbacconfv3.Policy{
			"shop": {Permissions: anyPerm(), Principals: []*rbacconfv3.Principal{peer("spiffe://mesh.local/ns/shop/")}},
		}},
		ShadowRules: &rbacconfv3.RBAC{Action: rbacconfv3.RBAC_ALLOW, Policies: map[string]*rbacconfv3.Policy{
			"web-only": {Permissions: anyPerm(), Principals: []*rbacconfv3.Principal{peer("spiffe://mesh.local/ns/shop/sa/web")}},
		}},
	}, st)
	addr := func() string {
		return serveGuarded(t, p, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{ca.issue(t, "", true)},
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.pool})
	}()
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{name: "shop web", id: "spiffe://mesh.local/ns/shop/sa/web", ok: true},
		{name: "shop api (shadow would deny)", id: "spiffe://mesh.local/ns/shop/sa/api", ok: true},
		{name: "ops", id: "spiffe://mesh.local/ns/ops/sa/admin", ok: false},
		{name: "other trust domain", id: "spiffe://evil.local/ns/shop/sa/web", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool, ServerName: "127.0.0.1",
				Certificates: []tls.Certificate{ca.issue(t, tt.id, false)}})
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = conn.Write([]byte("ping"))
			buf := make([]byte, 4)
			_, err = io.ReadFull(conn, buf)
			if tt.ok && (err != nil || string(buf) != "ping") {
				t.Fatalf("allowed connection: %q, %v", buf, err)
			}
			if !tt.ok && (err == nil || !(errors.Is(err, io.EOF) || strings.Contains(err.Error(), "reset"))) {
				t.Fatalf("denied connection read %q, %v", buf, err)
			}
		})
	}
	if st.get("rbac.allowed") != 2 || st.get("rbac.denied") != 2 || st.get("rbac.shadow_denied") != 3 || st.get("rbac.shadow_allowed") != 1 {
		t.Errorf("counters %v", st.n)
	}
}
