package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

// extCanaryCmd, extPromoteCmd and extRollbackCmd are the rollout steps:
// MeshKit rewrites every entry of the extension in the desired config.

func (c *cli) extCanaryCmd() *cobra.Command {
	req := &meshkitv1.CanaryRequest{}
	cmd := &cobra.Command{
		Use:   "canary NAME --package store:NAME@VERSION --percent P [--by requests|proxies]",
		Short: "Run a pushed package for a share of the requests or of the proxies; the running one is kept as the previous",
		Long: `Run a pushed package for P% of the requests (--by requests, the default: each proxy splits
its requests) or of the proxies (--by proxies: MeshKit sends the new package to the proxies
whose node-id hash falls under P, the previous one to the others). Every entry of extension
NAME in the desired config changes, as one new config version. Run it again to move the
percent; then promote or roll back.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Extension = args[0]
			if !strings.HasPrefix(req.GetPackage(), "store:") {
				return fmt.Errorf("--package %q: want store:NAME@VERSION (a package pushed with omnictl ext push)", req.GetPackage())
			}
			return c.rollout(cmd.Context(), "ext canary", func(ctx context.Context, cl meshkitv1.RolloutsClient) (*meshkitv1.RolloutResponse, error) {
				return cl.Canary(ctx, req)
			}, fmt.Sprintf("canary of %s: %s for %d%% of the %s", req.GetExtension(), req.GetPackage(), req.GetPercent(), orDefault(req.GetBy(), "requests")))
		},
	}
	cmd.Flags().StringVar(&req.Package, "package", "", "the new package, store:NAME@VERSION (required)")
	cmd.Flags().Uint32Var(&req.Percent, "percent", 0, "share of requests or proxies that get the new package, 0-100 (required)")
	cmd.Flags().StringVar(&req.By, "by", "", "requests (default) or proxies")
	_ = cmd.MarkFlagRequired("package")
	_ = cmd.MarkFlagRequired("percent")
	return cmd
}

func (c *cli) extPromoteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "promote NAME",
		Short: "End an extension's canary keeping the new package (every proxy, every request)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.rollout(cmd.Context(), "ext promote", func(ctx context.Context, cl meshkitv1.RolloutsClient) (*meshkitv1.RolloutResponse, error) {
				return cl.Promote(ctx, &meshkitv1.PromoteRequest{Extension: args[0]})
			}, "promoted "+args[0])
		},
	}
}

func (c *cli) extRollbackCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rollback NAME",
		Short: "End an extension's canary restoring the previous package and config",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.rollout(cmd.Context(), "ext rollback", func(ctx context.Context, cl meshkitv1.RolloutsClient) (*meshkitv1.RolloutResponse, error) {
				return cl.Rollback(ctx, &meshkitv1.RollbackRequest{Extension: args[0]})
			}, "rolled back "+args[0])
		},
	}
}

func (c *cli) rollout(ctx context.Context, what string, call func(context.Context, meshkitv1.RolloutsClient) (*meshkitv1.RolloutResponse, error), done string) error {
	return c.withConn(ctx, func(ctx context.Context, conn *grpc.ClientConn) error {
		resp, err := call(ctx, meshkitv1.NewRolloutsClient(conn))
		if err != nil {
			return apiError(what, err)
		}
		return c.printMessage(resp, func(w io.Writer) {
			fmt.Fprintf(w, "%s: config version %s (%d entries: %s)\n", done, resp.GetVersion(), len(resp.GetEntries()), strings.Join(resp.GetEntries(), ", "))
		})
	})
}

// extensionsColumn shows what each extension entry runs on a proxy:
// "stamp=store:stamp@2 (canary 50%)".
func extensionsColumn(p *meshkitv1.Proxy) string {
	var out []string
	for _, x := range p.GetExtensions() {
		s := x.GetName() + "=" + x.GetPackage()
		if x.GetRole() != "" {
			s += fmt.Sprintf(" (%s %d%%)", x.GetRole(), x.GetPercent())
		}
		out = append(out, s)
	}
	return orDash(strings.Join(out, "; "))
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
