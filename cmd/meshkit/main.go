// Command meshkit is the OmniRelay control plane: it serves the desired
// configuration and the service registry over xDS v3 to OmniRelay proxies,
// Envoy and gRPC proxyless clients, and exposes the operator API omnictl uses.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/omnirelay/omnirelay/internal/controlplane/identity"
	"github.com/omnirelay/omnirelay/internal/controlplane/rollout"
	"github.com/omnirelay/omnirelay/internal/controlplane/serve"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "meshkit:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	var logLevel string
	root := &cobra.Command{
		Use:           "meshkit",
		Short:         "MeshKit: the OmniRelay control plane (xDS v3, registry, signed config)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	logger := func() *slog.Logger {
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
			lvl = slog.LevelInfo
		}
		return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	}

	var opt serve.Options
	var etcd, apiTokenFile, caKEKFile, configSteps string
	var configPause time.Duration
	serveCmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve xDS and the operator API until SIGINT/SIGTERM",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if etcd != "" {
				opt.Etcd = strings.Split(etcd, ",")
			}
			if configSteps != "" {
				steps, err := rollout.ParseSteps(configSteps)
				if err != nil {
					return fmt.Errorf("--config-rollout-steps: %w", err)
				}
				opt.ConfigRollout = &rollout.Plan{Steps: steps, Pause: configPause}
			}
			if caKEKFile != "" {
				kek, err := identity.ReadKEK(caKEKFile)
				if err != nil {
					return err
				}
				opt.CAKEK = kek
			}
			if apiTokenFile != "" {
				tok, err := serve.ReadAPIToken(apiTokenFile)
				if err != nil {
					return err
				}
				opt.APIToken = tok
			}
			opt.Log = logger()
			p, err := serve.Start(opt)
			if err != nil {
				return err
			}
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
			s := <-sig
			opt.Log.Info("signal: stopping", "signal", s.String())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return p.Shutdown(ctx)
		},
	}
	f := serveCmd.Flags()
	f.StringVar(&opt.ConfigFile, "config", "", "desired config (omnirelay.v1 YAML), applied at start and on change")
	f.StringVar(&opt.XDSAddress, "xds-address", "127.0.0.1:15010", "xDS (ADS) gRPC address")
	f.StringVar(&opt.XDSTransport, "xds-transport", "lean", "xDS server transport: lean (MeshKit's own gRPC over HTTP/2, ~9 KB per proxy) or grpc (grpc-go)")
	f.StringVar(&opt.APIAddress, "api-address", "127.0.0.1:15011", "operator API address (gRPC and JSON over HTTP)")
	f.StringVar(&opt.DataDir, "data-dir", "meshkit-data", "directory of the embedded bbolt store")
	f.StringVar(&etcd, "etcd", "", "comma-separated etcd endpoints: store state in etcd instead (several replicas)")
	f.StringVar(&opt.EtcdPrefix, "etcd-prefix", "/meshkit", "key prefix in etcd")
	f.StringVar(&opt.SigningKey, "signing-key", "", "ed25519 private key (PEM) signing every resource served to OmniRelay")
	f.StringVar(&configSteps, "config-rollout-steps", "", "roll out every change of --config after the first in these steps (percents of proxies, e.g. 10,50,100) instead of applying it to all proxies at once")
	f.DurationVar(&configPause, "config-rollout-pause", rollout.DefaultPause, "pause per step of --config-rollout-steps")
	f.IntVar(&opt.HistoryKeep, "history-keep", 50, "how many desired-config versions the store keeps (omnictl history, diff, undo), 1..10000")
	f.StringVar(&opt.ReplicaID, "replica-id", "", "this replica's name in leader elections (default host:pid)")
	f.StringVar(&opt.IdentityAddress, "identity-address", "127.0.0.1:15012", "identity CA address (TLS gRPC: SVIDs by CSR); empty disables identity")
	f.StringVar(&opt.TrustDomain, "trust-domain", serve.DefaultTrustDomain, "SPIFFE trust domain of issued SVIDs")
	f.DurationVar(&opt.SVIDTTL, "svid-ttl", time.Hour, "lifetime of issued SVIDs")
	f.StringVar(&opt.CACert, "ca-cert", "", "operator CA chain (PEM, signing certificate first, ending with the root); default: a root generated and kept in the store")
	f.StringVar(&opt.CAKey, "ca-key", "", "private key (PEM) of --ca-cert")
	f.StringVar(&caKEKFile, "ca-key-encryption-key-file", "", "secret (at least 32 characters) sealing the generated CA's private key in the store (AES-256-GCM); every replica needs the same file")
	f.StringVar(&apiTokenFile, "api-token-file", "", "file holding the bearer token every API call must present (omnictl --token-file); required when --api-address is not loopback")
	f.BoolVar(&opt.XDSTLS, "xds-tls", false, "serve xDS over TLS with an SVID for spiffe://<trust-domain>/meshkit from the identity CA (needs --identity-address)")
	f.StringSliceVar(&opt.XDSTLSSANs, "xds-tls-san", nil, "extra DNS names or IPs in MeshKit's xDS certificate (the listen IP is always in it)")
	f.StringVar(&opt.XDSClientAuth, "xds-client-auth", "", "xDS client certificates with --xds-tls: none, optional (default: verified when given, secrets only to verified nodes) or require")
	f.BoolVar(&opt.XDSInsecure, "xds-insecure", false, "serve a non-loopback xDS address in plaintext (anyone reaching it can read any node's config)")
	f.DurationVar(&opt.ServerCertTTL, "server-cert-ttl", 24*time.Hour, "lifetime of MeshKit's xDS and API certificates with --xds-tls/--api-tls (reissued at half-life)")
	f.BoolVar(&opt.APITLS, "api-tls", false, "serve the API (gRPC and JSON) over TLS with an SVID for spiffe://<trust-domain>/meshkit from the identity CA (needs --identity-address; omnictl --ca-file)")
	f.StringSliceVar(&opt.APITLSSANs, "api-tls-san", nil, "extra DNS names or IPs in MeshKit's API certificate (the listen IP is always in it)")
	f.StringVar(&opt.CABundleOut, "ca-bundle-out", "", "write the identity CA's trust bundle (PEM) to this file at start (for --xds-ca, omnictl --ca-file, curl --cacert)")
	f.BoolVar(&opt.APIInsecure, "api-insecure", false, "serve a non-loopback API without a token (anyone reaching it can change the mesh and mint identities)")

	var priv, pub string
	keygen := &cobra.Command{
		Use:   "keygen --private FILE --public FILE",
		Short: "Generate an ed25519 signing key pair (the public key is OmniRelay's --trust-root)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if priv == "" || pub == "" {
				return fmt.Errorf("--private and --public are required")
			}
			pk, sk, err := signing.GenerateKey()
			if err != nil {
				return err
			}
			if err := signing.WritePrivateKey(priv, sk); err != nil {
				return err
			}
			if err := signing.WritePublicKey(pub, pk); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "key %s: private %s, public %s\n", signing.KeyID(pk), priv, pub)
			return nil
		},
	}
	keygen.Flags().StringVar(&priv, "private", "", "private key file to write (mode 0600)")
	keygen.Flags().StringVar(&pub, "public", "", "public key file to write")

	versionCmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "meshkit", version) },
	}
	root.AddCommand(serveCmd, keygen, versionCmd)
	return root
}
