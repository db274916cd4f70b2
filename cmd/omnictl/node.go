package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

// nodeCmd is `omnictl node list|revoke`: the nodes enrolled for SVIDs.
func (c *cli) nodeCmd() *cobra.Command {
	node := &cobra.Command{
		Use:   "node list|revoke NODE",
		Short: "List nodes enrolled for certificates, revoke one",
	}
	node.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List enrolled nodes: SPIFFE ID, state, last certificate",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withConn(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := meshkitv1.NewIdentityAdminClient(conn).ListNodes(ctx, &meshkitv1.ListNodesRequest{})
				if err != nil {
					return apiError("node list", err)
				}
				return c.printMessage(resp, func(w io.Writer) {
					row(w, "NODE", "SPIFFE ID", "STATE", "CERT EXPIRES", "SERIAL")
					for _, n := range resp.GetNodes() {
						row(w, n.GetNodeId(), n.GetSpiffeId(), nodeState(n), when(n.GetCertExpiresAt()), orDash(n.GetSerial()))
					}
				})
			})
		},
	})
	node.AddCommand(&cobra.Command{
		Use:   "revoke NODE",
		Short: "Refuse every later certificate to NODE and drop its unused join tokens",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withConn(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := meshkitv1.NewIdentityAdminClient(conn).RevokeNode(ctx, &meshkitv1.RevokeNodeRequest{NodeId: args[0]})
				if err != nil {
					return apiError("node revoke "+args[0], err)
				}
				return c.printMessage(resp, func(w io.Writer) {
					fmt.Fprintf(w, "revoked node %s (%d unused join tokens dropped); its current certificate stays valid until it expires\n",
						args[0], resp.GetTokensDropped())
				})
			})
		},
	})
	return node
}

// nodeState is revoked, active (holds a certificate) or pending (has not
// used its join token yet).
func nodeState(n *meshkitv1.IdentityNode) string {
	switch {
	case n.GetRevoked():
		return "revoked"
	case n.GetLastIssuedAt() != nil:
		return "active"
	}
	return "pending"
}

func when(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().Local().Format(time.RFC3339)
}
