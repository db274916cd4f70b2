package app

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/omnirelay/omnirelay/internal/dataplane/identity"
	"github.com/omnirelay/omnirelay/internal/dataplane/secrets"
)

// IdentityOptions start the identity agent: the proxy gets its SVID from
// MeshKit's identity service and publishes it, with the trust bundle, into
// the runtime's secret store as "default" and "ROOTCA" for mesh mTLS.
type IdentityOptions struct {
	// Address is MeshKit's identity address (host:port).
	Address string
	// JoinToken authenticates the first certificate (omnictl token create).
	JoinToken string
	// CAFile is the PEM bundle trusted on first contact with MeshKit.
	CAFile string
	// TrustDomain defaults to the one the bundle's root names.
	TrustDomain string
	NodeID      string
}

// identityAgent is the agent and the goroutine that runs it.
type identityAgent struct {
	*identity.Agent
	log         *slog.Logger
	unsubscribe func()
	cancel      context.CancelFunc
	wg          sync.WaitGroup
}

// newIdentity makes the agent, publishing into store every SVID it will get.
// It contacts nobody before run: a proxy whose config does not apply never
// spends its join token.
func newIdentity(o *IdentityOptions, store *secrets.Store, log *slog.Logger) (*identityAgent, error) {
	agent, err := identity.NewAgent(identity.Config{Address: o.Address, JoinToken: o.JoinToken, CAFile: o.CAFile,
		TrustDomain: o.TrustDomain, NodeID: o.NodeID, Log: log})
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	a := &identityAgent{Agent: agent, log: log, cancel: func() {}}
	a.unsubscribe = agent.Subscribe(func(sv *identity.SVID) {
		if err := store.SetIdentity(sv.Certificate, sv.Roots, sv.ID.TrustDomain()); err != nil {
			log.Error("identity: SVID not usable for mTLS", "spiffe_id", sv.ID.String(), "error", err)
			return
		}
		log.Info("identity: SVID published for mTLS", "spiffe_id", sv.ID.String(), "not_after", sv.Certificate.Leaf.NotAfter)
	})
	return a, nil
}

// run starts the agent. It does not wait for the first SVID: listeners and
// clusters that need it refuse handshakes until it arrives (reason
// secret_missing).
func (a *identityAgent) run() {
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		// Run returns ctx's error on stop, or a refusal MeshKit will not
		// change its mind about (token refused, node revoked): the proxy
		// keeps serving with the SVID it has until it expires.
		if err := a.Run(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("identity agent stopped; mTLS keeps the current SVID until it expires", "error", err)
		}
	}()
}

// stop ends the agent (if it runs) and its publishing.
func (a *identityAgent) stop(context.Context) error {
	a.cancel()
	a.wg.Wait()
	a.unsubscribe()
	return nil
}
