package secrets

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/omnirelay/omnirelay/internal/dataplane/secrets/testca"
)

const td = "omnirelay.local"

func uriPrefix(p string) []SANMatcher {
	ms, err := CompileSANMatchers([]*tlsv3.SubjectAltNameMatcher{{
		SanType: tlsv3.SubjectAltNameMatcher_URI,
		Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: p}},
	}})
	if err != nil {
		panic(err)
	}
	return ms
}

func TestVerifyPeer(t *testing.T) {
	ca := testca.New(t, td)
	other := testca.New(t, "other.example")
	rogue := testca.New(t, td) // same trust domain name, different key
	val, err := NewValidation([]*x509.Certificate{ca.Cert}, spiffeid.TrustDomain{})
	if err != nil {
		t.Fatal(err)
	}
	if val.TrustDomain.Name() != td {
		t.Fatalf("trust domain from root = %q, want %q", val.TrustDomain.Name(), td)
	}
	now := time.Now()
	good := "spiffe://" + td + "/ns/default/sa/web"
	chain := func(c *tls.Certificate) []*x509.Certificate { return []*x509.Certificate{c.Leaf} }
	tests := []struct {
		name   string
		chain  []*x509.Certificate
		sans   []SANMatcher
		reason string // "" accepts
		id     string
	}{
		{name: "valid svid", chain: chain(ca.Issue(t, testca.Leaf{ID: good})), id: good},
		{name: "valid svid with matching san", chain: chain(ca.Issue(t, testca.Leaf{ID: good})), sans: uriPrefix("spiffe://" + td + "/ns/default/"), id: good},
		{name: "no certificate", reason: ReasonNoClientCert},
		{name: "expired", chain: chain(ca.Issue(t, testca.Leaf{ID: good, NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)})), reason: ReasonExpired},
		{name: "not yet valid", chain: chain(ca.Issue(t, testca.Leaf{ID: good, NotBefore: now.Add(time.Hour), NotAfter: now.Add(2 * time.Hour)})), reason: ReasonNotYetValid},
		{name: "self-signed", chain: chain(ca.Issue(t, testca.Leaf{ID: good, SelfSigned: true})), reason: ReasonSelfSigned},
		{name: "wrong trust domain", chain: chain(other.Issue(t, testca.Leaf{ID: "spiffe://other.example/ns/default/sa/web"})), reason: ReasonTrustDomain},
		{name: "same trust domain name, other CA", chain: chain(rogue.Issue(t, testca.Leaf{ID: good})), reason: ReasonUntrusted},
		{name: "wrong san", chain: chain(ca.Issue(t, testca.Leaf{ID: "spiffe://" + td + "/ns/prod/sa/web"})), sans: uriPrefix("spiffe://" + td + "/ns/default/"), reason: ReasonSAN},
		{name: "no spiffe id", chain: chain(ca.Issue(t, testca.Leaf{DNS: []string{"web"}})), reason: ReasonSAN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := VerifyPeer(tt.chain, val, tt.sans, x509.ExtKeyUsageClientAuth, now)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if id != tt.id {
					t.Fatalf("id = %q, want %q", id, tt.id)
				}
				return
			}
			if got := ReasonOf(err); got != tt.reason {
				t.Fatalf("reason = %q (%v), want %q", got, err, tt.reason)
			}
		})
	}
}

func TestStoreProviders(t *testing.T) {
	ca := testca.New(t, td)
	certPEM, keyPEM := testca.PEM(t, ca.Issue(t, testca.Leaf{ID: "spiffe://" + td + "/xds"}))
	xdsSecret := &tlsv3.Secret{Name: DefaultCertName, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: certPEM}},
		PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: keyPEM}},
	}}}
	s := NewStore()
	ref := s.Ref(DefaultCertName)
	if ref.Load() != nil {
		t.Fatal("empty store returned a secret")
	}
	parsed, err := ParseSnapshot([]*tlsv3.Secret{xdsSecret})
	if err != nil {
		t.Fatal(err)
	}
	s.SetSnapshot(parsed)
	if got := spiffeIDOf(ref.Load().Cert.Leaf).String(); got != "spiffe://"+td+"/xds" {
		t.Fatalf("after snapshot: %q", got)
	}
	agentCert := ca.Issue(t, testca.Leaf{ID: "spiffe://" + td + "/agent"})
	if err := s.SetIdentity(agentCert, []*x509.Certificate{ca.Cert}, spiffeid.RequireTrustDomainFromString(td)); err != nil {
		t.Fatal(err)
	}
	if ref.Load().Cert != agentCert {
		t.Fatal("the agent's certificate does not win over the snapshot's")
	}
	if v := s.Ref(RootCAName).Load(); v == nil || v.Validation.TrustDomain.Name() != td {
		t.Fatalf("ROOTCA = %+v", v)
	}
	// A snapshot without the secret clears the snapshot's copy only.
	s.SetSnapshot(nil)
	if ref.Load().Cert != agentCert {
		t.Fatal("clearing the snapshot dropped the agent's certificate")
	}
	s2 := NewStore()
	s2.SetSnapshot(parsed)
	s2.SetSnapshot(nil)
	if s2.Ref(DefaultCertName).Load() != nil {
		t.Fatal("a secret dropped from the snapshot is still served")
	}

	bad := &tlsv3.Secret{Name: "bad", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "not pem"}},
		PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: keyPEM}},
	}}}
	if _, err := ParseSnapshot([]*tlsv3.Secret{bad}); err == nil {
		t.Fatal("a broken secret parsed")
	}
}

// handshake runs one TLS handshake over loopback and returns both sides'
// errors (the server's first) and the server's view of the client.
func handshake(t *testing.T, server, client *tls.Config) (serr, cerr error, peer string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		err  error
		peer string
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		st := tc.ConnectionState()
		_, _ = tc.Write([]byte("ok"))
		done <- result{peer: PeerIdentity(&st)}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(c, client)
	cerr = tc.Handshake()
	if cerr == nil {
		// TLS 1.3 clients learn that the server refused their certificate
		// only when they read.
		buf := make([]byte, 2)
		_, cerr = io.ReadFull(tc, buf)
	}
	r := <-done
	return r.err, cerr, r.peer
}

func TestHandshakeRotationAndRefusals(t *testing.T) {
	ca := testca.New(t, td)
	webID := "spiffe://" + td + "/ns/default/sa/web"
	apiID := "spiffe://" + td + "/ns/default/sa/api"
	serverStore, clientStore := NewStore(), NewStore()
	tdid := spiffeid.RequireTrustDomainFromString(td)
	roots := []*x509.Certificate{ca.Cert}
	if err := serverStore.SetIdentity(ca.Issue(t, testca.Leaf{ID: apiID}), roots, tdid); err != nil {
		t.Fatal(err)
	}
	server := ServerConfig(Params{Certs: []*Ref{serverStore.Ref(DefaultCertName)}, Validation: serverStore.Ref(RootCAName),
		RequireClientCert: true, SANs: uriPrefix("spiffe://" + td + "/")})
	client := ClientConfig(Params{Certs: []*Ref{clientStore.Ref(DefaultCertName)}, Validation: clientStore.Ref(RootCAName),
		SANs: uriPrefix(apiID)}, "")

	// Before the client's agent has an SVID its cluster warms: refused.
	if _, cerr, _ := handshake(t, server, client); ReasonOf(cerr) != ReasonSecretMissing {
		t.Fatalf("client without ROOTCA: %v", cerr)
	}
	if err := clientStore.SetIdentity(ca.Issue(t, testca.Leaf{ID: webID}), roots, tdid); err != nil {
		t.Fatal(err)
	}
	serr, cerr, peer := handshake(t, server, client)
	if serr != nil || cerr != nil || peer != webID {
		t.Fatalf("mTLS: server %v, client %v, peer %q", serr, cerr, peer)
	}

	// Rotation: the next handshake presents the new certificate; no config
	// is rebuilt.
	rotated := ca.Issue(t, testca.Leaf{ID: webID})
	if err := clientStore.SetIdentity(rotated, roots, tdid); err != nil {
		t.Fatal(err)
	}
	got := make(chan *x509.Certificate, 1)
	server2 := server.Clone()
	inner := server.VerifyConnection
	server2.VerifyConnection = func(cs tls.ConnectionState) error {
		got <- cs.PeerCertificates[0]
		return inner(cs)
	}
	if serr, cerr, _ := handshake(t, server2, client); serr != nil || cerr != nil {
		t.Fatalf("after rotation: %v / %v", serr, cerr)
	}
	if c := <-got; !c.Equal(rotated.Leaf) {
		t.Fatal("the server saw the old certificate after rotation")
	}

	// The client refuses a server whose SPIFFE ID is not the expected one.
	wrongServer := NewStore()
	if err := wrongServer.SetIdentity(ca.Issue(t, testca.Leaf{ID: "spiffe://" + td + "/ns/default/sa/other"}), roots, tdid); err != nil {
		t.Fatal(err)
	}
	srv := ServerConfig(Params{Certs: []*Ref{wrongServer.Ref(DefaultCertName)}, Validation: wrongServer.Ref(RootCAName), RequireClientCert: true})
	if _, cerr, _ := handshake(t, srv, client); ReasonOf(cerr) != ReasonSAN {
		t.Fatalf("wrong server identity: %v", cerr)
	}

	// A client without a certificate is refused by a STRICT server, and the
	// server's error carries the reason.
	anon := ClientConfig(Params{Validation: clientStore.Ref(RootCAName)}, "")
	serr, cerr, _ = handshake(t, server, anon)
	if ReasonOf(serr) != ReasonNoClientCert || cerr == nil {
		t.Fatalf("anonymous client: server %v, client %v", serr, cerr)
	}
	var ve *VerifyError
	if !errors.As(serr, &ve) {
		t.Fatalf("server error %T is not a VerifyError", serr)
	}
}

// BenchmarkVerifyPeer is the per-handshake cost of checking a client SVID
// (dates, chain to the bundle with go-spiffe, SAN matcher).
func BenchmarkVerifyPeer(b *testing.B) {
	ca := testca.New(b, td)
	val, err := NewValidation([]*x509.Certificate{ca.Cert}, spiffeid.TrustDomain{})
	if err != nil {
		b.Fatal(err)
	}
	chain := []*x509.Certificate{ca.Issue(b, testca.Leaf{ID: "spiffe://" + td + "/ns/default/sa/web"}).Leaf}
	sans := uriPrefix("spiffe://" + td + "/ns/default/")
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := VerifyPeer(chain, val, sans, x509.ExtKeyUsageClientAuth, now); err != nil {
			b.Fatal(err)
		}
	}
}

// TestResumptionStillVerifies: a cluster resumes TLS sessions, but a
// resumed handshake is still checked against the live bundle, so a bundle
// change refuses a peer even on resumption.
func TestResumptionStillVerifies(t *testing.T) {
	ca := testca.New(t, td)
	tdid := spiffeid.RequireTrustDomainFromString(td)
	roots := []*x509.Certificate{ca.Cert}
	serverStore, clientStore := NewStore(), NewStore()
	if err := serverStore.SetIdentity(ca.Issue(t, testca.Leaf{ID: "spiffe://" + td + "/api"}), roots, tdid); err != nil {
		t.Fatal(err)
	}
	if err := clientStore.SetIdentity(ca.Issue(t, testca.Leaf{ID: "spiffe://" + td + "/web"}), roots, tdid); err != nil {
		t.Fatal(err)
	}
	server := ServerConfig(Params{Certs: []*Ref{serverStore.Ref(DefaultCertName)}, Validation: serverStore.Ref(RootCAName), RequireClientCert: true})
	client := ClientConfig(Params{Certs: []*Ref{clientStore.Ref(DefaultCertName)}, Validation: clientStore.Ref(RootCAName)}, "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := tls.Server(c, server)
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if tc.Handshake() == nil {
					_, _ = tc.Write([]byte("ok"))
					_, _ = tc.Read(make([]byte, 1)) // until the client closes
				}
			}()
		}
	}()
	dial := func() (bool, error) {
		c, err := tls.Dial("tcp", ln.Addr().String(), client)
		if err != nil {
			return false, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		// Reading processes the TLS 1.3 session ticket.
		if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
			return false, err
		}
		return c.ConnectionState().DidResume, nil
	}
	if _, err := dial(); err != nil {
		t.Fatal(err)
	}
	resumed, err := dial()
	if err != nil || !resumed {
		t.Fatalf("second connection: resumed=%v err=%v", resumed, err)
	}
	// The client's bundle changes to another CA: even a resumable session
	// to the old server is refused.
	other := testca.New(t, td)
	if err := clientStore.SetIdentity(other.Issue(t, testca.Leaf{ID: "spiffe://" + td + "/web"}), []*x509.Certificate{other.Cert}, tdid); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(); ReasonOf(err) != ReasonUntrusted {
		t.Fatalf("after a bundle change: %v", err)
	}
}
