// Command omnirelay is the OmniRelay data plane: an L4/L7 proxy driven by a
// static config file (omnirelay.v1 YAML or Envoy static resources) or by an
// xDS control plane (MeshKit or any xDS v3 server) over ADS.
//
// Build it with -tags grpcnotrace, as bench/run.sh does: without the tag
// grpc-go links golang.org/x/net/trace, whose html/template use stops the
// linker from dropping unused methods, which costs 11 MB of binary and about
// 3 MiB of idle RSS (docs/benchmarks.md, "Idle RSS"). Nothing is lost: the
// trace pages it registers are on http.DefaultServeMux, which the proxy never
// serves.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/omnirelay/omnirelay/internal/dataplane/app"
	"github.com/omnirelay/omnirelay/internal/dataplane/demo"
	"github.com/omnirelay/omnirelay/internal/dataplane/static"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "omnirelay:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	var logLevel string
	root := &cobra.Command{
		Use:           "omnirelay",
		Short:         "OmniRelay data plane: a fast, safely extensible L4/L7 proxy",
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

	var cfgPath, adminAddr, extTrust string
	var drain time.Duration
	var xo app.XDSOptions
	var idOpt app.IdentityOptions
	run := &cobra.Command{
		Use:   "run (--config FILE | --xds ADDR[,ADDR...] --node-id ID)",
		Short: "Run the proxy on a config file (hot-reloaded on change and SIGHUP) or from an xDS control plane",
		RunE: func(cmd *cobra.Command, _ []string) error {
			opt := app.Options{ConfigPath: cfgPath, Log: logger(), AdminAddress: adminAddr, DrainTimeout: drain, ExtensionTrustRoot: extTrust}
			if idOpt.Address != "" {
				if idOpt.NodeID == "" {
					idOpt.NodeID = xo.NodeID
				}
				opt.Identity = &idOpt
			}
			switch {
			case cfgPath != "" && xo.Address != "":
				return fmt.Errorf("--config and --xds are exclusive: choose one config source")
			case xo.Address != "":
				if xo.NodeID == "" {
					return fmt.Errorf("--xds needs --node-id")
				}
				xo.Build = version
				xo.TrustDomain = idOpt.TrustDomain
				opt.XDS = &xo
			case cfgPath == "":
				return fmt.Errorf("--config FILE or --xds ADDR is required")
			default:
				for _, f := range []string{"node-id", "cluster", "lkg-dir", "trust-root", "xds-sotw", "xds-ca"} {
					if cmd.Flags().Changed(f) {
						return fmt.Errorf("--%s only applies with --xds", f)
					}
				}
			}
			return app.RunUntilSignal(opt)
		},
	}
	run.Flags().StringVarP(&cfgPath, "config", "c", "", "config file (omnirelay.v1 YAML or Envoy static_resources YAML/JSON)")
	run.Flags().StringVar(&adminAddr, "admin", "", "admin address (overrides the config's admin.address; default "+app.DefaultAdminAddress+" with --xds)")
	run.Flags().DurationVar(&drain, "drain-timeout", 30*time.Second, "how long SIGTERM waits for in-flight requests")
	run.Flags().StringVar(&xo.Address, "xds", "", "xDS control plane address (host:port), or replicas separated by commas; the proxy subscribes over ADS")
	run.Flags().StringVar(&xo.NodeID, "node-id", "", "xDS node id of this proxy")
	run.Flags().StringVar(&xo.Cluster, "cluster", "", "xDS node cluster of this proxy")
	run.Flags().StringVar(&xo.LKGDir, "lkg-dir", "", "directory for the last-known-good config (used when the control plane is unreachable at start)")
	run.Flags().StringVar(&xo.TrustRoot, "trust-root", "", "PEM file of ed25519 public keys: every xDS resource must be signed by one of them")
	run.Flags().BoolVar(&xo.SotW, "xds-sotw", false, "use state-of-the-world ADS instead of delta")
	run.Flags().StringVar(&xo.CAFile, "xds-ca", "", "PEM trust bundle of MeshKit's CA: xDS over TLS, MeshKit authenticated as spiffe://<trust-domain>/meshkit (with --identity-address the proxy's SVID is its client certificate)")
	run.Flags().StringVar(&idOpt.Address, "identity-address", "", "MeshKit identity address (host:port): get an SVID for mesh mTLS (secrets default and ROOTCA)")
	run.Flags().StringVar(&idOpt.JoinToken, "join-token", "", "one-time join token for the first SVID (omnictl token create)")
	run.Flags().StringVar(&idOpt.CAFile, "identity-ca", "", "PEM trust bundle for the first contact with MeshKit's identity service")
	run.Flags().StringVar(&idOpt.TrustDomain, "trust-domain", "", "SPIFFE trust domain (default: the one the --identity-ca root names)")
	run.Flags().StringVar(&extTrust, "extension-trust-root", "", "PEM file of ed25519 public keys extension packages must be signed by (default with --xds: --trust-root; without: no extension loads)")

	validate := &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a config file and print every problem with its location",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := static.Load(args[0])
			if err != nil {
				return err
			}
			if err := l.Snapshot.Validate(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: valid (%s): %d listeners, %d clusters, version %s\n",
				args[0], l.Format, len(l.Snapshot.Listeners), len(l.Snapshot.Clusters), l.Snapshot.Hash())
			return nil
		},
	}

	demoCmd := &cobra.Command{
		Use:   "demo",
		Short: "Start sample backends and the proxy on the example config",
		RunE:  func(*cobra.Command, []string) error { return demo.Run(logger()) },
	}

	versionCmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "omnirelay", version) },
	}
	root.AddCommand(run, validate, demoCmd, versionCmd, sidecarCmd(), sdsCmd(logger))
	return root
}
