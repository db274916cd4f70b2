// Package sds serves a workload's mesh identity to a local Envoy (or any
// client of Envoy's Secret Discovery Service) on the node: the SVID as the
// secret "default" (tls_certificate: the chain and its private key) and the
// trust bundle as "ROOTCA" (validation_context), Istio's names, which the
// configs MeshKit translates already reference through the "sds-grpc"
// source. Every rotation is pushed to open streams at once.
//
// The secrets come from the identity agent, which makes the private key on
// the node and has MeshKit sign only a certificate request: MeshKit never
// holds a workload's key, so SDS with keys in it is served here, next to the
// workload, and not by MeshKit (Istio's istio-agent serves Envoy the same
// way). The listener is meant to be a Unix socket only the sidecar's user
// can open (Listen creates it mode 0600); a loopback TCP address works too.
//
// The protocol side is go-control-plane's xDS server over a LinearCache of
// the two secrets: it speaks SotW and delta SDS with ACK/NACK as Envoy
// expects, so nothing of the protocol is hand-written here.
package sds

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/omnirelay/omnirelay/internal/dataplane/identity"
)

// Secret names, the ones translated mesh configs reference.
const (
	SecretDefault = "default"
	SecretRootCA  = "ROOTCA"
)

// Source gives the current SVID and its rotations; identity.Agent is one.
type Source interface {
	// Subscribe calls f with the current SVID (if any) and every later one;
	// f must not block.
	Subscribe(f func(*identity.SVID)) (cancel func())
}

var _ Source = (*identity.Agent)(nil)

// Server serves the secrets of one Source.
type Server struct {
	src   Source
	log   *slog.Logger
	cache *cachev3.LinearCache
}

// New returns a server for src's secrets.
func New(src Source, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{src: src, log: log, cache: cachev3.NewLinearCache(resourcev3.SecretType)}
}

// Serve serves SDS on l until ctx ends, then stops the streams and returns
// nil; it closes l. Connections are accepted only once the source has its
// first SVID: a client that connects earlier waits in the listen backlog for
// its answer rather than getting an empty response, which Envoy would NACK
// ("missing SDS resources").
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	ready := make(chan struct{})
	var once sync.Once
	cancel := s.src.Subscribe(func(sv *identity.SVID) {
		if s.publish(sv) {
			once.Do(func() { close(ready) })
		}
	})
	defer cancel()
	select {
	case <-ready:
	case <-ctx.Done():
		l.Close()
		return nil
	}
	g := grpc.NewServer()
	secretv3.RegisterSecretDiscoveryServiceServer(g, serverv3.NewServer(ctx, s.cache, nil))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		g.Stop()
	}()
	err := g.Serve(l)
	<-ctx.Done()
	wg.Wait()
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}

// publish makes sv the served secrets; it reports whether sv was usable.
func (s *Server) publish(sv *identity.SVID) bool {
	res, err := Secrets(sv)
	if err != nil {
		s.log.Error("sds: SVID not served", "spiffe_id", sv.ID.String(), "error", err)
		return false
	}
	s.cache.SetResources(res)
	s.log.Info("sds: secrets updated", "spiffe_id", sv.ID.String(), "not_after", sv.Certificate.Leaf.NotAfter)
	return true
}

// Secrets returns the SDS resources for sv: "default" and "ROOTCA".
func Secrets(sv *identity.SVID) (map[string]types.Resource, error) {
	if sv == nil || sv.Certificate == nil || len(sv.Certificate.Certificate) == 0 {
		return nil, errors.New("sds: no certificate")
	}
	var chain []byte
	for _, der := range sv.Certificate.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(sv.Certificate.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("sds: private key: %w", err)
	}
	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	var roots []byte
	for _, c := range sv.Roots {
		roots = append(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if len(roots) == 0 {
		return nil, errors.New("sds: empty trust bundle")
	}
	inline := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	return map[string]types.Resource{
		SecretDefault: &tlsv3.Secret{Name: SecretDefault, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(chain), PrivateKey: inline(key)}}},
		SecretRootCA: &tlsv3.Secret{Name: SecretRootCA, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(roots)}}},
	}, nil
}

// Listen opens addr: "unix:///path/to/socket" (created mode 0600, a stale
// socket file replaced) or host:port.
func Listen(addr string) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, "unix://")
	if !ok {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("sds: listen %s: %w", addr, err)
		}
		return l, nil
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("sds: %s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("sds: remove stale socket: %w", err)
		}
	}
	// The socket is made under a umask that leaves only its owner access,
	// so no other user on the node can read the private key off it.
	l, err := listenUnixPrivate(path)
	if err != nil {
		return nil, fmt.Errorf("sds: listen %s: %w", path, err)
	}
	return l, nil
}
