package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

// authorMetadata names the caller in MeshKit's config history (declared,
// not authenticated); api.AuthorMetadata on the server side.
const authorMetadata = "omnirelay-author"

// defaultAuthor is user@host, or what $OMNICTL_AUTHOR says.
func defaultAuthor() string {
	if a := os.Getenv("OMNICTL_AUTHOR"); a != "" {
		return a
	}
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		name += "@" + h
	}
	return name
}

// authorInterceptor sends the author with every unary call.
func authorInterceptor(author string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(metadata.AppendToOutgoingContext(ctx, authorMetadata, author), method, req, reply, cc, opts...)
	}
}

func (c *cli) historyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "history",
		Short: "List the kept desired-config versions, newest first (number, when, who, what changed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withConn(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := meshkitv1.NewConfigClient(conn).History(ctx, &meshkitv1.HistoryRequest{})
				if err != nil {
					return apiError("history", err)
				}
				return c.printMessage(resp, func(w io.Writer) {
					row(w, "VERSION", "DIGEST", "WHEN", "AUTHOR", "ORIGIN", "SIGNED", "CHANGES")
					for _, v := range resp.GetVersions() {
						num := strconv.FormatInt(v.GetNumber(), 10)
						if v.GetCurrent() {
							num += "*"
						}
						signed := "-"
						if len(v.GetSignature()) > 0 {
							signed = v.GetKeyId()
						}
						row(w, num, v.GetVersion(), v.GetCreatedAt().AsTime().UTC().Format(time.RFC3339), orDash(v.GetAuthor()),
							orDash(v.GetOrigin()), signed, orDash(strings.Join(v.GetSummary(), "; ")))
					}
				})
			})
		},
	}
}

func parseVersionArg(what, s string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimPrefix(s, "v"), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s %q: want a version number (1, 2, ...; as omnictl history lists them)", what, s)
	}
	return n, nil
}

func (c *cli) diffCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "diff [FROM [TO]]",
		Short: "Compare two config versions (default: the current one against the one before it): changes by resource, then a unified diff",
		Args:  cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &meshkitv1.DiffRequest{}
			var err error
			if len(args) > 0 {
				if req.From, err = parseVersionArg("FROM", args[0]); err != nil {
					return err
				}
			}
			if len(args) > 1 {
				if req.To, err = parseVersionArg("TO", args[1]); err != nil {
					return err
				}
			}
			return c.withConn(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := meshkitv1.NewConfigClient(conn).Diff(ctx, req)
				if err != nil {
					return apiError("diff", err)
				}
				return c.printMessage(resp, func(w io.Writer) {
					for _, s := range resp.GetSummary() {
						fmt.Fprintf(w, "# %s\n", s)
					}
					fmt.Fprint(w, resp.GetUnified())
				})
			})
		},
	}
}

func (c *cli) undoCmd() *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "undo [--to VERSION]",
		Short: "Apply an earlier config version's document again, as a new version (default: the version before the current one)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &meshkitv1.UndoRequest{}
			if to != "" {
				n, err := parseVersionArg("--to", to)
				if err != nil {
					return err
				}
				req.To = n
			}
			return c.withConn(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := meshkitv1.NewConfigClient(conn).Undo(ctx, req)
				if err != nil {
					return apiError("undo", err)
				}
				return c.printMessage(resp, func(w io.Writer) {
					fmt.Fprintf(w, "undone: version %d (digest %s)\n", resp.GetNumber(), resp.GetVersion())
				})
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "version whose document becomes the desired config again")
	return cmd
}
