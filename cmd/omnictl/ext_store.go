package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
)

// extPushCmd and extListCmd talk to MeshKit's package store.

func (c *cli) extPushCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "push FILE.orx",
		Short: "Store a signed package in MeshKit (versions are immutable)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pkg, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			return c.withConn(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := extv1.NewPackagesClient(conn).Push(ctx, &extv1.PushRequest{Package: pkg})
				if err != nil {
					return apiError("ext push", err)
				}
				p := resp.GetPackage()
				what := "pushed"
				if !resp.GetCreated() {
					what = "already stored:"
				}
				return c.printMessage(resp, func(w io.Writer) {
					fmt.Fprintf(w, "%s %s@%s (%s, %s, sha256 %s)\n", what, p.GetName(), p.GetVersion(), p.GetKind(), p.GetAbi(), p.GetPayloadSha256())
				})
			})
		},
	}
}

func (c *cli) extListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list [NAME]",
		Short: "List the packages stored in MeshKit",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &extv1.ListRequest{}
			if len(args) == 1 {
				req.Name = args[0]
			}
			return c.withConn(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := extv1.NewPackagesClient(conn).List(ctx, req)
				if err != nil {
					return apiError("ext list", err)
				}
				return c.printMessage(resp, func(w io.Writer) {
					row(w, "NAME", "VERSION", "KIND", "ABI", "SIZE", "SHA256", "PUSHED")
					for _, p := range resp.GetPackages() {
						row(w, p.GetName(), p.GetVersion(), p.GetKind(), p.GetAbi(), fmt.Sprint(p.GetSize()),
							p.GetPayloadSha256()[:12], p.GetPushedAt().AsTime().UTC().Format(time.RFC3339))
					}
				})
			})
		},
	}
}
