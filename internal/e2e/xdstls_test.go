package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/controlplane/serve"
	"github.com/omnirelay/omnirelay/internal/dataplane/app"
	"github.com/omnirelay/omnirelay/internal/dataplane/xdsclient"
	"github.com/omnirelay/omnirelay/internal/testutil"
	"github.com/omnirelay/omnirelay/internal/testutil/meshtest"
	"github.com/omnirelay/omnirelay/internal/testutil/proxytest"
)

// tlsMesh is a MeshKit serving xDS over TLS with its CA bundle on disk.
type tlsMesh struct {
	mk      *serve.Process
	opt     serve.Options // as started
	caFile  string
	web     string // the config's HTTP listener
	backend string
}

func startTLSMeshKit(t *testing.T, transport, clientAuth string, certTTL time.Duration) *tlsMesh {
	t.Helper()
	return startTLSMeshKitWith(t, serve.Options{XDSTransport: transport, XDSClientAuth: clientAuth, ServerCertTTL: certTTL, SVIDTTL: time.Hour})
}

// startTLSMeshKitWith starts MeshKit with opt's TLS and identity settings
// on free loopback ports, following a config with one HTTP listener.
func startTLSMeshKitWith(t *testing.T, opt serve.Options) *tlsMesh {
	t.Helper()
	dir := t.TempDir()
	m := &tlsMesh{web: testutil.Addr(t), backend: okBackend(t), caFile: filepath.Join(dir, "ca.pem")}
	opt.XDSAddress, opt.APIAddress, opt.IdentityAddress, opt.DataDir = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", dir
	opt.ConfigFile, opt.ReplicaID, opt.Log, opt.XDSTLS = filepath.Join(dir, "mesh.yaml"), "e2e", testutil.Logger(t).With("side", "meshkit"), true
	m.opt = opt
	m.writeConfig(t, "")
	m.start(t)
	if err := os.WriteFile(m.caFile, m.mk.Identity.RootsPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return m
}

// writeConfig writes the followed config; extra is appended to its
// cluster list (a change gives the config a new version).
func (m *tlsMesh) writeConfig(t *testing.T, extra string) {
	t.Helper()
	doc := fmt.Sprintf(`listeners:
  - name: web
    address: %s
    virtual_hosts: [{ name: a, domains: ["*"], routes: [{ match: { path_prefix: / }, cluster: c }] }]
clusters:
  - { name: c, endpoints: [%s] }
%s`, m.web, m.backend, extra)
	if err := os.WriteFile(m.opt.ConfigFile, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (m *tlsMesh) start(t *testing.T) {
	t.Helper()
	mk := meshtest.Start(t, m.opt)
	m.mk = mk
}

// restart stops MeshKit and starts it again on the same xDS and identity
// addresses and store (same CA), so that every proxy reconnects.
func (m *tlsMesh) restart(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.mk.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	m.opt.XDSAddress, m.opt.IdentityAddress = m.mk.XDSAddr().String(), m.mk.IdentityAddr().String()
	m.start(t)
}

// enrol creates a join token binding node to a SPIFFE ID.
func (m *tlsMesh) enrol(t *testing.T, node string) string {
	t.Helper()
	tok, _, err := m.mk.Identity.CreateJoinToken(context.Background(), node, "spiffe://omnirelay.local/ns/e2e/sa/"+node, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// tlsProxy starts a proxy whose xDS runs over TLS trusting caFile; a
// non-empty token also starts the identity agent (its SVID issued to
// idNode) so that the proxy presents a client certificate.
func (m *tlsMesh) tlsProxy(t *testing.T, node, caFile, token, idNode, lkgDir string) *app.Proxy {
	t.Helper()
	opt := app.Options{
		XDS: &app.XDSOptions{
			Address: m.mk.XDSAddr().String(), NodeID: node, Cluster: "e2e", Build: "e2e", CAFile: caFile, LKGDir: lkgDir,
			LKGAfter: 300 * time.Millisecond, Backoff: xdsclient.Backoff{Initial: 50 * time.Millisecond, Max: 300 * time.Millisecond},
		},
		AdminAddress: testutil.Addr(t), Log: testutil.Logger(t).With("node", node), DrainTimeout: 2 * time.Second,
	}
	if token != "" {
		opt.Identity = &app.IdentityOptions{Address: m.mk.IdentityAddr().String(), JoinToken: token, CAFile: m.caFile, NodeID: idNode}
	}
	p := proxytest.StartWith(t, opt)
	return p
}

func (m *tlsMesh) serves(t *testing.T, what string) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	testutil.Eventually(t, 15*time.Second, 25*time.Millisecond, what, func() (bool, string) {
		resp, err := client.Get("http://" + m.web + "/")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
}

// refusedWith waits until the proxy's xDS client reports an error holding
// every part, and checks that it applied no config from MeshKit.
func refusedWith(t *testing.T, p *app.Proxy, parts ...string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, 25*time.Millisecond, "xds refused with "+strings.Join(parts, ", "), func() (bool, string) {
		e := p.XDS.Status().LastError
		for _, s := range parts {
			if !strings.Contains(e, s) {
				return false, e
			}
		}
		return true, ""
	})
	if s := p.XDS.Status(); s.Applied && !s.FromLKG {
		t.Fatalf("a refused proxy applied MeshKit's config: %+v", s)
	}
}

// TestMeshXDSOverMTLS: over both xDS transports, a proxy with an SVID gets
// its config over mTLS and serves traffic; under client auth "require" a
// proxy without a certificate is refused at the handshake, and one whose
// SVID was issued to another node is refused with PermissionDenied naming
// both ids; a proxy trusting another CA fails with a certificate error and
// keeps serving its last-known-good.
func TestMeshXDSOverMTLS(t *testing.T) {
	for _, transport := range []string{"lean", "grpc"} {
		t.Run(transport, func(t *testing.T) {
			m := startTLSMeshKit(t, transport, serve.ClientAuthRequire, 0)
			lkgDir := t.TempDir()
			p := m.tlsProxy(t, "edge-1", m.caFile, m.enrol(t, "edge-1"), "edge-1", lkgDir)
			m.serves(t, "traffic through the mTLS-configured proxy")
			if s := p.XDS.Status(); !s.Connected || s.FromLKG {
				t.Fatalf("status %+v; want connected, config from MeshKit", s)
			}

			t.Run("no client certificate", func(t *testing.T) {
				q := m.tlsProxy(t, "edge-nocert", m.caFile, "", "", "")
				refusedWith(t, q, "certificate required")
			})
			t.Run("SVID of another node", func(t *testing.T) {
				q := m.tlsProxy(t, "edge-3", m.caFile, m.enrol(t, "edge-2"), "edge-2", "")
				refusedWith(t, q, "PermissionDenied", `"edge-3"`, `"edge-2"`)
			})
			t.Run("wrong CA keeps last-known-good", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := p.Shutdown(ctx); err != nil { // frees the web listener's port
					t.Fatal(err)
				}
				other := filepath.Join(t.TempDir(), "other-ca.pem")
				writeOtherCA(t, other)
				q := m.tlsProxy(t, "edge-1", other, "", "", lkgDir)
				refusedWith(t, q, "x509", "certificate signed by unknown authority")
				m.serves(t, "traffic from last-known-good")
				if s := q.XDS.Status(); !s.FromLKG {
					t.Fatalf("status %+v; want the config from last-known-good", s)
				}
			})
		})
	}
}

// TestMeshXDSServerCertRenewal: MeshKit's xDS certificate (3 s lifetime)
// is reissued at half-life without a restart, and a proxy connecting after
// the first certificate expired verifies the new one.
func TestMeshXDSServerCertRenewal(t *testing.T) {
	for _, transport := range []string{"lean", "grpc"} {
		t.Run(transport, func(t *testing.T) {
			m := startTLSMeshKit(t, transport, serve.ClientAuthOptional, 3*time.Second)
			first := serverCert(t, m)
			if first.URIs[0].String() != "spiffe://omnirelay.local/meshkit" {
				t.Fatalf("xds certificate URI %v", first.URIs)
			}
			testutil.Eventually(t, 10*time.Second, 25*time.Millisecond, "the first certificate expired and a new one served", func() (bool, string) {
				second := serverCert(t, m)
				ok := time.Now().After(first.NotAfter) && second.SerialNumber.Cmp(first.SerialNumber) != 0 && second.NotAfter.After(first.NotAfter)
				return ok, fmt.Sprintf("serial %v -> %v, not after %v -> %v", first.SerialNumber, second.SerialNumber, first.NotAfter, second.NotAfter)
			})
			m.tlsProxy(t, "edge-late", m.caFile, m.enrol(t, "edge-late"), "edge-late", "")
			m.serves(t, "traffic through a proxy that verified the renewed certificate")
		})
	}
}

// TestMeshXDSClientSVIDRotation: under client auth "require", a proxy whose
// SVID (2 s lifetime) has been renewed by its identity agent presents the
// new one when it reconnects: after the first SVID expired, MeshKit
// restarts on the same addresses and the proxy takes its next config.
func TestMeshXDSClientSVIDRotation(t *testing.T) {
	for _, transport := range []string{"lean", "grpc"} {
		t.Run(transport, func(t *testing.T) {
			const svidTTL = 2 * time.Second
			m := startTLSMeshKitWith(t, serve.Options{XDSTransport: transport, XDSClientAuth: serve.ClientAuthRequire, SVIDTTL: svidTTL})
			p := m.tlsProxy(t, "edge-rot", m.caFile, m.enrol(t, "edge-rot"), "edge-rot", "")
			m.serves(t, "traffic through the proxy")
			connectedAt := time.Now()
			first := p.XDS.Status().Version
			// The clock is what is tested: the SVID the proxy connected with
			// must have expired before it reconnects.
			testutil.Eventually(t, 3*svidTTL, 25*time.Millisecond, "the first SVID expired", func() (bool, string) {
				return time.Since(connectedAt) > svidTTL+500*time.Millisecond, ""
			})
			m.writeConfig(t, "  - { name: d, endpoints: [127.0.0.1:9] }\n")
			m.restart(t)
			testutil.Eventually(t, 10*time.Second, 25*time.Millisecond, "the proxy reconnected with its renewed SVID and took the new config", func() (bool, string) {
				s := p.XDS.Status()
				return s.Connected && s.Version != first && s.Version != "", fmt.Sprintf("%+v", s)
			})
		})
	}
}

// serverCert is the certificate MeshKit's xDS port presents now.
func serverCert(t *testing.T, m *tlsMesh) *x509.Certificate {
	t.Helper()
	bundle, err := os.ReadFile(m.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(bundle)
	c, err := tls.Dial("tcp", m.mk.XDSAddr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatalf("dial xds with the bundle, verifying the IP SAN: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// writeOtherCA writes a root of the same trust domain that MeshKit does not
// use.
func writeOtherCA(t *testing.T, path string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://omnirelay.local")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "other"}, URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}
