package serve

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/omnirelay/omnirelay/internal/controlplane/identity"
)

// DefaultTrustDomain is the trust domain when Options.TrustDomain is empty.
const DefaultTrustDomain = "omnirelay.local"

// startIdentity loads (or creates) the CA, binds the identity port and
// registers IdentityAdmin on the API server. Serving starts with the other
// servers in Start.
func (p *Process) startIdentity(ctx context.Context, opt Options) error {
	if opt.TrustDomain == "" {
		opt.TrustDomain = DefaultTrustDomain
	}
	td, err := spiffeid.TrustDomainFromString(opt.TrustDomain)
	if err != nil {
		return fmt.Errorf("trust domain %q: %w", opt.TrustDomain, err)
	}
	var ca *identity.CA
	switch {
	case opt.CACert != "" && opt.CAKey != "":
		ca, err = identity.LoadCAFiles(td, opt.CACert, opt.CAKey, time.Now())
	case opt.CACert != "" || opt.CAKey != "":
		return fmt.Errorf("identity: --ca-cert and --ca-key go together")
	default:
		ca, err = identity.LoadOrCreateSealedCA(ctx, p.Store, td, time.Now(), opt.CAKEK)
	}
	if err != nil {
		return err
	}
	p.Identity, err = identity.NewService(identity.Options{CA: ca, Store: p.Store, SVIDTTL: opt.SVIDTTL, Log: opt.Log})
	if err != nil {
		return err
	}
	if p.identityLn, err = net.Listen("tcp", opt.IdentityAddress); err != nil {
		return fmt.Errorf("identity address: %w", err)
	}
	p.stop.Push(closeListener(p.identityLn))
	p.identitySrv = grpc.NewServer(grpc.Creds(credentials.NewTLS(p.Identity.ServerTLSConfig())))
	p.Identity.RegisterIdentity(p.identitySrv)
	p.Identity.RegisterAdmin(p.apiGRPC)
	return nil
}

// IdentityAddr is the bound identity address, or nil when identity is off.
func (p *Process) IdentityAddr() net.Addr {
	if p.identityLn == nil {
		return nil
	}
	return p.identityLn.Addr()
}
