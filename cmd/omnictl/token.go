package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

// tokenCmd is `omnictl token create`: a join token for a proxy's first
// certificate (MeshKit's IdentityAdmin service).
func (c *cli) tokenCmd() *cobra.Command {
	token := &cobra.Command{
		Use:   "token create --node ID --spiffe-id ID",
		Short: "Create join tokens for proxies' first certificates",
	}
	var (
		node, spiffeID, caOut string
		ttl                   time.Duration
	)
	create := &cobra.Command{
		Use:   "create --node ID --spiffe-id spiffe://<trust-domain>/ns/<ns>/sa/<sa>",
		Short: "Enrol a node and print a single-use join token for its first SVID",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if node == "" || spiffeID == "" {
				return fmt.Errorf("--node and --spiffe-id are required")
			}
			return c.withConn(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				req := &meshkitv1.CreateJoinTokenRequest{NodeId: node, SpiffeId: spiffeID}
				if ttl != 0 {
					req.Ttl = durationpb.New(ttl)
				}
				resp, err := meshkitv1.NewIdentityAdminClient(conn).CreateJoinToken(ctx, req)
				if err != nil {
					return apiError("token create "+node, err)
				}
				if caOut != "" {
					if err := os.WriteFile(caOut, resp.GetTrustBundlePem(), 0o644); err != nil {
						return fmt.Errorf("--ca-out: %w", err)
					}
				}
				return c.printMessage(resp, func(w io.Writer) {
					row(w, "token", resp.GetToken())
					row(w, "node", node)
					row(w, "spiffe id", spiffeID)
					row(w, "expires", resp.GetExpiresAt().AsTime().Local().Format(time.RFC3339))
					if caOut != "" {
						row(w, "trust bundle", caOut+" (pass it to omnirelay as --identity-ca)")
					}
				})
			})
		},
	}
	f := create.Flags()
	f.StringVar(&node, "node", "", "node id of the proxy (its --node-id)")
	f.StringVar(&spiffeID, "spiffe-id", "", "SPIFFE ID the node's certificates carry")
	f.DurationVar(&ttl, "ttl", 0, "how long the token may be used (default 1h, at most 720h)")
	f.StringVar(&caOut, "ca-out", "", "write the trust bundle (PEM) to this file")
	token.AddCommand(create)
	return token
}
