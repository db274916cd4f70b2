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

// startIdentity starts the agent, feeding store with every SVID it gets. It
// does not wait for the first one: listeners and clusters that need it
// refuse handshakes until it arrives (reason secret_missing). The returned
// stop ends the agent and waits for it.
func startIdentity(o *IdentityOptions, store *secrets.Store, log *slog.Logger) (stop func(), err error) {
	stop, _, err = startIdentityAgent(o, store, log)
	return stop, err
}

// startIdentityAgent is startIdentity that also returns the agent, whose
// current SVID the xDS client presents to MeshKit.
func startIdentityAgent(o *IdentityOptions, store *secrets.Store, log *slog.Logger) (stop func(), agent *identity.Agent, err error) {
	agent, err = identity.NewAgent(identity.Config{Address: o.Address, JoinToken: o.JoinToken, CAFile: o.CAFile,
		TrustDomain: o.TrustDomain, NodeID: o.NodeID, Log: log})
	if err != nil {
		return nil, nil, err
	}
	unsubscribe := agent.Subscribe(func(sv *identity.SVID) {
		if err := store.SetIdentity(sv.Certificate, sv.Roots, sv.ID.TrustDomain()); err != nil {
			log.Error("identity: SVID not usable for mTLS", "spiffe_id", sv.ID.String(), "error", err)
			return
		}
		log.Info("identity: SVID published for mTLS", "spiffe_id", sv.ID.String(), "not_after", sv.Certificate.Leaf.NotAfter)
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Run returns ctx's error on stop, or a refusal MeshKit will not
		// change its mind about (token refused, node revoked): the proxy
		// keeps serving with the SVID it has until it expires.
		if err := agent.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("identity agent stopped; mTLS keeps the current SVID until it expires", "error", err)
		}
	}()
	return func() { cancel(); wg.Wait(); unsubscribe() }, agent, nil
}

func identityError(err error) error { return fmt.Errorf("identity: %w", err) }
