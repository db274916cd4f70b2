package xdsserver

import (
	"context"
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
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate whose common name is a node id.
type testPKI struct {
	pool   *x509.CertPool
	server tls.Certificate
	client tls.Certificate
}

func newTestPKI(t *testing.T, clientNode string) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, ips []net.IP) tls.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, IPAddresses: ips,
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{pool: pool, server: leaf(2, "server", []net.IP{net.IPv4(127, 0, 0, 1)}), client: leaf(3, clientNode, nil)}
}

// startTLSServer serves o over TLS (ALPN h2, client certificates verified
// when given) on the transport TestMain selects.
func startTLSServer(t *testing.T, o Options, pki *testPKI) *testServer {
	t.Helper()
	if o.Cache == nil {
		o.Cache = NewCache()
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pki.server}, ClientCAs: pki.pool, ClientAuth: tls.VerifyClientCertIfGiven,
		NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(o)
	served := make(chan struct{})
	if leanTransport {
		go func() {
			defer close(served)
			if err := srv.Serve(tls.NewListener(lis, cfg)); err != nil {
				t.Errorf("serve: %v", err)
			}
		}()
		t.Cleanup(func() { srv.Stop(); <-served })
	} else {
		g := grpc.NewServer(append(ServerOptions(), grpc.Creds(credentials.NewTLS(cfg)))...)
		srv.Register(g)
		go func() { defer close(served); _ = g.Serve(lis) }()
		t.Cleanup(func() { g.Stop(); <-served })
	}
	return &testServer{cache: o.Cache, addr: lis.Addr().String(), server: srv}
}

func dialTLS(t *testing.T, addr string, pki *testPKI, withCert bool) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{RootCAs: pki.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if withCert {
		cfg.Certificates = []tls.Certificate{pki.client}
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// certAuthorize is the policy the tests run: a verified certificate's
// common name must be the node id, and only such streams get secrets.
func certAuthorize(node *corev3.Node, p Peer) (bool, error) {
	if p.TLS == nil || len(p.TLS.VerifiedChains) == 0 {
		return false, nil
	}
	if cn := p.TLS.VerifiedChains[0][0].Subject.CommonName; cn != node.GetId() {
		return false, errors.New("node " + node.GetId() + " is not " + cn)
	}
	return true, nil
}

// TestTLSSecretsWithheld: over TLS, a stream with a verified client
// certificate gets the SDS secret it asks for; a stream without one gets
// every other type but never the secret, on SotW, delta and Fetch; a
// certificate for another node ends the stream with PermissionDenied.
func TestTLSSecretsWithheld(t *testing.T) {
	pki := newTestPKI(t, "n1")
	ts := startTLSServer(t, Options{Authorize: certAuthorize}, pki)
	secret := &Resource{Name: "key", Body: mustAny(t, &tlsv3.Secret{Name: "key"})}
	ts.cache.Set("n1", snapshot("v1", map[string][]*Resource{
		resourcev3.SecretType:   {secret},
		resourcev3.ListenerType: {listener(t, "b")},
	}))

	for _, tc := range []struct {
		name     string
		withCert bool
	}{
		{"verified certificate", true},
		{"no certificate", false},
	} {
		t.Run(tc.name+"/sotw", func(t *testing.T) {
			c := newSotW(t, dialTLS(t, ts.addr, pki, tc.withCert))
			c.send(&discoveryv3.DiscoveryRequest{Node: node("n1"), TypeUrl: resourcev3.SecretType, ResourceNames: []string{"key"}})
			if tc.withCert {
				if m := c.recv(); m.TypeUrl != resourcev3.SecretType || len(m.Resources) != 1 {
					t.Fatalf("got %s with %d resources; want the secret", m.TypeUrl, len(m.Resources))
				}
				return
			}
			c.barrier("b") // the next message is the listener: no secret was sent
		})
		t.Run(tc.name+"/delta", func(t *testing.T) {
			c := newDelta(t, dialTLS(t, ts.addr, pki, tc.withCert))
			c.send(&discoveryv3.DeltaDiscoveryRequest{Node: node("n1"), TypeUrl: resourcev3.SecretType, ResourceNamesSubscribe: []string{"key"}})
			if tc.withCert {
				if m := c.recv(); m.TypeUrl != resourcev3.SecretType || len(m.Resources) != 1 {
					t.Fatalf("got %s with %d resources; want the secret", m.TypeUrl, len(m.Resources))
				}
				return
			}
			c.barrier("b")
		})
		t.Run(tc.name+"/fetch", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			cc := dialTLS(t, ts.addr, pki, tc.withCert)
			var resp discoveryv3.DiscoveryResponse
			err := cc.Invoke(ctx, "/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets",
				&discoveryv3.DiscoveryRequest{Node: node("n1"), ResourceNames: []string{"key"}}, &resp)
			if tc.withCert {
				if err != nil || len(resp.Resources) != 1 {
					t.Fatalf("fetch: %v, %d resources; want the secret", err, len(resp.Resources))
				}
				return
			}
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("fetch without a certificate: %v; want PermissionDenied", err)
			}
		})
	}

	t.Run("certificate of another node", func(t *testing.T) {
		c := newSotW(t, dialTLS(t, ts.addr, pki, true))
		c.send(&discoveryv3.DiscoveryRequest{Node: node("n2"), TypeUrl: resourcev3.ListenerType})
		select {
		case _, ok := <-c.msgs:
			if ok {
				t.Fatal("a response on a refused stream")
			}
		case <-time.After(testTimeout):
			t.Fatal("stream not ended")
		}
		if status.Code(c.err) != codes.PermissionDenied {
			t.Fatalf("stream ended with %v; want PermissionDenied", c.err)
		}
	})
}

// TestTLSRequiresALPN: a TLS connection that did not negotiate h2 is
// closed before any HTTP/2 (the lean transport's own check; grpc-go's
// server enforces the same).
func TestTLSRequiresALPN(t *testing.T) {
	pki := newTestPKI(t, "n1")
	ts := startTLSServer(t, Options{}, pki)
	conn, err := tls.Dial("tcp", ts.addr, &tls.Config{RootCAs: pki.pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(testTimeout))
	if _, err := conn.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")); err != nil {
		return // closed already
	}
	if n, err := conn.Read(make([]byte, 64)); !errors.Is(err, io.EOF) {
		t.Fatalf("read %d bytes, %v; want the connection closed", n, err)
	}
}
