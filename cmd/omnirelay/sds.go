package main

import (
	"fmt"
	"log/slog"
	"os/signal"
	"sync"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/omnirelay/omnirelay/internal/dataplane/identity"
	"github.com/omnirelay/omnirelay/internal/dataplane/sds"
)

// sdsCmd is `omnirelay sds`: the node-local identity agent for an Envoy
// sidecar. It gets the workload's SVID from MeshKit (the key never leaves
// the node) and serves it to Envoy over SDS as "default" and "ROOTCA".
func sdsCmd(logger func() *slog.Logger) *cobra.Command {
	var listen string
	var cfg identity.Config
	cmd := &cobra.Command{
		Use:   "sds --identity-address ADDR --join-token TOKEN --identity-ca FILE",
		Short: "Serve this workload's SVID from MeshKit to a local Envoy over SDS (secrets default and ROOTCA)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Address == "" {
				return fmt.Errorf("--identity-address is required")
			}
			log := logger()
			cfg.Log = log
			agent, err := identity.NewAgent(cfg)
			if err != nil {
				return err
			}
			l, err := sds.Listen(listen)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				// A refusal MeshKit will not change its mind about (token
				// refused, node revoked) ends renewal; the SVID already
				// served stays until it expires, as in the proxy.
				if err := agent.Run(ctx); err != nil && ctx.Err() == nil {
					log.Error("identity agent stopped", "error", err)
				}
			}()
			log.Info("sds: serving", "listen", listen)
			err = sds.New(agent, log).Serve(ctx, l)
			stop()
			wg.Wait()
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "unix:///var/run/omnirelay/sds.sock", "where Envoy's sds-grpc cluster connects: unix:///path (created mode 0600) or host:port")
	f.StringVar(&cfg.Address, "identity-address", "", "MeshKit identity address (host:port, or replicas separated by commas)")
	f.StringVar(&cfg.JoinToken, "join-token", "", "one-time join token for the first SVID (omnictl token create)")
	f.StringVar(&cfg.CAFile, "identity-ca", "", "PEM trust bundle for the first contact with MeshKit's identity service")
	f.StringVar(&cfg.TrustDomain, "trust-domain", "", "SPIFFE trust domain (default: the one the --identity-ca root names)")
	f.StringVar(&cfg.NodeID, "node-id", "", "node id for logs (MeshKit takes the node from the join token)")
	return cmd
}
