package serve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/omnirelay/omnirelay/internal/controlplane/identity"
	"github.com/omnirelay/omnirelay/internal/controlplane/xdsserver"
)

// Client authentication modes of the xDS port (Options.XDSClientAuth).
const (
	ClientAuthNone     = "none"     // no client certificate asked for; every stream gets secrets (plaintext behaviour)
	ClientAuthOptional = "optional" // a certificate, when given, is verified and bound to the node; secrets only to such streams
	ClientAuthRequire  = "require"  // the handshake fails without a verified certificate
)

// nodeLookupTimeout bounds the store read that checks a client's node
// record when its stream opens (on the lean transport, on the connection's
// reader goroutine).
const nodeLookupTimeout = 5 * time.Second

// isLoopback reports whether host (of a listen address) only accepts
// connections from this machine.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkXDSExposure refuses a plaintext xDS port reachable beyond this
// machine: whoever reaches it can claim any node id and read that node's
// config, SDS private keys included.
func checkXDSExposure(addr string, tlsOn, insecure bool) error {
	if tlsOn || insecure {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("xds address %q: %w", addr, err)
	}
	if isLoopback(host) {
		return nil
	}
	return errors.New("xds address " + addr + " is reachable from other machines: give --xds-tls (or --xds-insecure to serve it in plaintext)")
}

// xdsTLSConfig builds the xDS port's TLS: MeshKit's own SVID (renewed by
// GetCertificate), ALPN h2, and client certificates verified against the
// CA's bundle as the mode asks.
func (p *Process) xdsTLSConfig(opt Options) (*tls.Config, error) {
	if p.Identity == nil {
		return nil, errors.New("--xds-tls needs the identity CA (--identity-address): MeshKit's xDS certificate is issued by it")
	}
	sc, err := p.Identity.NewServerCert(certHosts(p.xdsLn, opt.XDSTLSSANs), opt.ServerCertTTL)
	if err != nil {
		return nil, fmt.Errorf("xds tls: %w", err)
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2"},
		GetCertificate: sc.GetCertificate,
		ClientCAs:      p.Identity.RootPool(),
	}
	switch opt.XDSClientAuth {
	case ClientAuthNone:
		cfg.ClientAuth = tls.NoClientCert
	case ClientAuthOptional:
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	case ClientAuthRequire:
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// certHosts are the SANs of a port's certificate besides the SPIFFE ID:
// the operator's names, and the bound IP unless it is a wildcard (plus
// localhost for loopback).
func certHosts(ln net.Listener, sans []string) []string {
	hosts := append([]string(nil), sans...)
	if host, _, err := net.SplitHostPort(ln.Addr().String()); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			hosts = append(hosts, host)
			if ip.IsLoopback() {
				hosts = append(hosts, "localhost")
			}
		}
	}
	return hosts
}

// startAPITLS sets the API server's TLS (server authentication only: the
// bearer token authenticates callers) and writes the CA bundle file.
func (p *Process) startAPITLS(opt Options) error {
	if opt.CABundleOut != "" {
		if p.Identity == nil {
			return errors.New("--ca-bundle-out needs the identity CA (--identity-address)")
		}
		if err := os.WriteFile(opt.CABundleOut, p.Identity.RootsPEM(), 0o644); err != nil {
			return fmt.Errorf("--ca-bundle-out: %w", err)
		}
	}
	if !opt.APITLS {
		return nil
	}
	if p.Identity == nil {
		return errors.New("--api-tls needs the identity CA (--identity-address): MeshKit's API certificate is issued by it")
	}
	sc, err := p.Identity.NewServerCert(certHosts(p.apiLn, opt.APITLSSANs), opt.ServerCertTTL)
	if err != nil {
		return fmt.Errorf("api tls: %w", err)
	}
	p.apiHTTP.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}, GetCertificate: sc.GetCertificate}
	return nil
}

// checkClientAuth validates Options.XDSClientAuth (empty: optional).
func checkClientAuth(mode string, tlsOn bool) (string, error) {
	switch mode {
	case "":
		if !tlsOn {
			return ClientAuthNone, nil
		}
		return ClientAuthOptional, nil
	case ClientAuthNone, ClientAuthOptional, ClientAuthRequire:
		if mode != ClientAuthNone && !tlsOn {
			return "", fmt.Errorf("--xds-client-auth %s needs --xds-tls", mode)
		}
		return mode, nil
	}
	return "", fmt.Errorf("--xds-client-auth %q: want none, optional or require", mode)
}

// xdsAuthorize is xdsserver's Authorize for a client-auth mode. A verified
// client certificate must be an SVID of the trust domain whose node (the
// certificate's common name, which the CA vouches for) is the node id the
// stream claims, and whose SPIFFE ID is still the one the node's record
// (written with its join token) binds it to, the node not revoked. Secrets
// go only to such streams unless the mode is none.
func (p *Process) xdsAuthorize(mode string) func(*corev3.Node, xdsserver.Peer) (bool, error) {
	return func(node *corev3.Node, peer xdsserver.Peer) (bool, error) {
		if mode == ClientAuthNone {
			return true, nil
		}
		leaf := verifiedLeaf(peer.TLS)
		if leaf == nil {
			if mode == ClientAuthRequire {
				return false, status.Error(codes.Unauthenticated, "xds: a verified client certificate is required")
			}
			return false, nil
		}
		id, err := x509svid.IDFromCert(leaf)
		if err != nil || !id.MemberOf(p.Identity.TrustDomain()) {
			return false, status.Errorf(codes.PermissionDenied, "xds: client certificate is not an SVID of trust domain %s", p.Identity.TrustDomain().Name())
		}
		certNode := leaf.Subject.CommonName
		if certNode != node.GetId() {
			return false, status.Errorf(codes.PermissionDenied, "xds: node id %q does not match the client certificate, issued to node %q (%s)",
				node.GetId(), certNode, id)
		}
		ctx, cancel := context.WithTimeout(context.Background(), nodeLookupTimeout)
		defer cancel()
		rec, err := p.Identity.LookupNode(ctx, certNode)
		switch {
		case errors.Is(err, identity.ErrNodeNotEnrolled):
			return false, status.Errorf(codes.PermissionDenied, "xds: node %q (%s) is not enrolled", certNode, id)
		case err != nil:
			return false, status.Errorf(codes.Unavailable, "xds: node %q: %v", certNode, err)
		case rec.Revoked:
			return false, status.Errorf(codes.PermissionDenied, "xds: node %q is revoked", certNode)
		case rec.SPIFFEID != id.String():
			return false, status.Errorf(codes.PermissionDenied, "xds: client certificate %s is not the SPIFFE ID node %q is bound to (%s)",
				id, certNode, rec.SPIFFEID)
		}
		return true, nil
	}
}

func verifiedLeaf(cs *tls.ConnectionState) *x509.Certificate {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return nil
	}
	return cs.VerifiedChains[0][0]
}

// startXDS builds the xDS server of the chosen transport, with TLS and
// client authentication when asked. Serving starts with the other servers.
// With client authentication, the node records are watched (until ctx
// ends) so that a revoked node loses its open streams (watchNodeRecords).
// Under mode none there is no Authorize at all: it would let every stream
// through, and the server then keeps no per-node list of streams.
func (p *Process) startXDS(ctx context.Context, opt Options, clientAuth string) error {
	var cfg *tls.Config
	if opt.XDSTLS {
		var err error
		if cfg, err = p.xdsTLSConfig(opt); err != nil {
			return err
		}
		if clientAuth != ClientAuthNone {
			p.MeshKit.Server().SetAuthorize(p.xdsAuthorize(clientAuth))
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.watchNodeRecords(ctx) }()
		}
	}
	switch opt.XDSTransport {
	case "", "lean":
		p.xdsServeLn = p.xdsLn
		if cfg != nil {
			p.xdsServeLn = tls.NewListener(p.xdsLn, cfg)
		}
	case "grpc":
		sopts := xdsserver.ServerOptions()
		if cfg != nil {
			sopts = append(sopts, grpc.Creds(credentials.NewTLS(cfg)))
		}
		p.xdsSrv = grpc.NewServer(sopts...)
		p.MeshKit.Server().Register(p.xdsSrv)
	default:
		return fmt.Errorf("xds transport %q: want lean or grpc", opt.XDSTransport)
	}
	return nil
}
