// Command mtlsconf writes what the mTLS rows of bench/run.sh need: a test CA
// and X.509 SVIDs signed by it (ECDSA P-256), and OmniRelay's static
// bootstrap for the run.
//
// The bootstrap is not a hand-written Envoy file: it is the translation of an
// omnirelay.v1 config whose listener has `mtls: {mode: STRICT}` (the same
// translator MeshKit serves over xDS), plus the two secrets the identity
// agent would publish, "default" (the proxy's SVID) and "ROOTCA" (the trust
// bundle), given as static secrets read from the generated files. The proxy
// under test therefore runs the mesh mTLS path (SDS secret references read
// at every handshake, client SVIDs verified with go-spiffe against the
// trust domain), only without a MeshKit to renew the certificates.
//
//	mtlsconf -dir D [-gen=false] [-config omnirelay-mtls.yaml -out D/omnirelay.json]
//
// Files written in D: ca.pem (the root, URI SAN spiffe://<trust-domain>),
// server.pem/server.key (the proxies' certificate), server-bundle.pem
// (certificate then key, as HAProxy's crt wants), client.pem/client.key
// (the load generator's).
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/translate"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "mtlsconf:", err)
		os.Exit(1)
	}
}

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("mtlsconf", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "directory for the certificates (created if missing)")
	td := fs.String("trust-domain", config.DefaultTrustDomain, "SPIFFE trust domain of the CA and the SVIDs")
	cfgPath := fs.String("config", "", "omnirelay.v1 config to translate into a static bootstrap (optional)")
	out := fs.String("out", "", "where to write the bootstrap (JSON); required with -config")
	gen := fs.Bool("gen", true, "write new certificates into -dir (false: the bootstrap points at the ones already there)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("-dir is required")
	}
	if (*cfgPath == "") != (*out == "") {
		return errors.New("-config and -out go together")
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	if *gen {
		if err := writeCerts(*dir, *td, time.Now()); err != nil {
			return err
		}
	} else if *cfgPath == "" {
		return errors.New("-gen=false without -config does nothing")
	}
	if *cfgPath == "" {
		return nil
	}
	b, err := bootstrap(*cfgPath, *dir)
	if err != nil {
		return err
	}
	return os.WriteFile(*out, b, 0o600)
}

// writeCerts writes a root and two SVIDs issued by it: the proxies' and the
// load generator's.
func writeCerts(dir, trustDomain string, now time.Time) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"OmniRelay bench"}, CommonName: "bench root"},
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("root: %w", err)
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, "ca.pem"), pemBlock("CERTIFICATE", caDER)); err != nil {
		return err
	}
	leaves := []struct{ name, id string }{
		{"server", "spiffe://" + trustDomain + "/ns/bench/sa/proxy"},
		{"client", "spiffe://" + trustDomain + "/ns/bench/sa/load"},
	}
	for i, l := range leaves {
		certPEM, keyPEM, err := issue(ca, caKey, l.id, int64(i+2), now)
		if err != nil {
			return fmt.Errorf("%s certificate: %w", l.name, err)
		}
		if err := writePEM(filepath.Join(dir, l.name+".pem"), certPEM); err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, l.name+".key"), keyPEM); err != nil {
			return err
		}
		if l.name == "server" {
			if err := writePEM(filepath.Join(dir, "server-bundle.pem"), append(certPEM, keyPEM...)); err != nil {
				return err
			}
		}
	}
	return nil
}

// issue returns an X.509 SVID for id (PEM certificate, PEM PKCS#8 key). It
// also names 127.0.0.1 and localhost, so that a client verifying the
// server by host name accepts it.
func issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, id string, serial int64, now time.Time) (certPEM, keyPEM []byte, err error) {
	u, err := url.Parse(id)
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{Organization: []string{"OmniRelay bench"}},
		URIs:         []*url.URL{u},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", pkcs8), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func writePEM(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// bootstrap translates the omnirelay.v1 config at cfgPath and adds the
// identity agent's two secrets as static secrets read from dir. The result
// is checked by loading it the way `omnirelay run --config` will.
func bootstrap(cfgPath, dir string) ([]byte, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	snap, err := translate.Translate(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	if len(snap.Routes) > 0 || len(snap.Endpoints) > 0 {
		return nil, fmt.Errorf("%s: routes or endpoints outside listeners and clusters cannot go in static_resources", cfgPath)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	file := func(name string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: filepath.Join(abs, name)}}
	}
	secrets := []*tlsv3.Secret{
		{Name: translate.SecretDefault, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: file("server.pem"), PrivateKey: file("server.key")}}},
		{Name: translate.SecretRootCA, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: file("ca.pem")}}},
	}
	host, portStr, err := net.SplitHostPort(cfg.Admin.EffectiveAddress())
	if err != nil {
		return nil, fmt.Errorf("admin address: %w", err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("admin address: %w", err)
	}
	b := &bootstrapv3.Bootstrap{
		Admin: &bootstrapv3.Admin{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Listeners: snap.Listeners,
			Clusters:  snap.Clusters,
			Secrets:   secrets,
		},
	}
	data, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	if _, _, err := config.LoadEnvoy("generated bootstrap", data); err != nil {
		return nil, err
	}
	return data, nil
}
