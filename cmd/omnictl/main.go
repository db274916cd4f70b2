// Command omnictl is the operator CLI of MeshKit: it applies and reads the
// desired config, registers and lists service endpoints, and shows the
// connected proxies, over MeshKit's gRPC API (internal/shared/api).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// DefaultServer is MeshKit's default API address.
const DefaultServer = "127.0.0.1:15011"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "omnictl:", err)
		os.Exit(1)
	}
}

// cli is what every command shares: the flags of the root and the output.
type cli struct {
	server    string
	output    string
	timeout   time.Duration
	tokenFile string
	caFile    string // TLS trusting this bundle; plaintext when empty
	author    string // who the config history records
	out       io.Writer
	errOut    io.Writer
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	c := &cli{out: stdout, errOut: stderr}
	root := &cobra.Command{
		Use:           "omnictl",
		Short:         "Operate a MeshKit control plane: config, registry, proxies",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			switch c.output {
			case "table", "json", "yaml":
				return nil
			}
			return fmt.Errorf("-o %q: want table, json or yaml", c.output)
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&c.server, "server", DefaultServer, "MeshKit API address (host:port)")
	pf.StringVarP(&c.output, "output", "o", "table", "output format: table, json or yaml")
	pf.DurationVar(&c.timeout, "timeout", 10*time.Second, "deadline of each API call")
	pf.StringVar(&c.caFile, "ca-file", "", "PEM bundle MeshKit's API certificate is verified against (meshkit serve --api-tls, --ca-bundle-out): TLS instead of plaintext; --server must be a name or IP the certificate holds")
	pf.StringVar(&c.author, "author", defaultAuthor(), "who MeshKit's config history records for a change (declared, not authenticated; default $OMNICTL_AUTHOR, else user@host)")
	pf.StringVar(&c.tokenFile, "token-file", "", "file holding MeshKit's API bearer token (default: $OMNICTL_TOKEN, else none)")
	root.AddCommand(c.applyCmd(), c.getCmd(), c.registerCmd(), c.deregisterCmd())
	root.AddCommand(c.tokenCmd(), c.nodeCmd())
	root.AddCommand(c.extCmd())
	root.AddCommand(c.historyCmd(), c.diffCmd(), c.undoCmd(), c.rolloutCmd())
	return root
}

// dial connects lazily (grpc.NewClient does no I/O), so a wrong --server
// shows up as UNAVAILABLE on the first call.
func (c *cli) dial() (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if c.caFile != "" {
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", c.caFile)
		}
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool})
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds), grpc.WithUnaryInterceptor(authorInterceptor(c.author))}
	tok := os.Getenv("OMNICTL_TOKEN")
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	if tok != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(tok)))
	}
	conn, err := grpc.NewClient(c.server, opts...)
	if err != nil {
		return nil, fmt.Errorf("server %q: %w", c.server, err)
	}
	return conn, nil
}

// call bounds one API call by --timeout.
func (c *cli) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.timeout)
}

// apiError turns a gRPC status into "CODE: message" (gRPC's own rendering
// buries the message after "rpc error: code = ... desc =").
func apiError(what string, err error) error {
	if st, ok := status.FromError(err); ok {
		return &callError{what: what, code: st.Code().String(), msg: st.Message()}
	}
	return fmt.Errorf("%s: %w", what, err)
}

type callError struct{ what, code, msg string }

// A multi-line message (every error of a rejected config) is indented
// under its first line so that each error reads on its own.
func (e *callError) Error() string {
	if strings.Contains(e.msg, "\n") {
		return fmt.Sprintf("%s: %s:\n  %s", e.what, e.code, strings.ReplaceAll(e.msg, "\n", "\n  "))
	}
	return fmt.Sprintf("%s: %s: %s", e.what, e.code, e.msg)
}

func isCode(err error, code string) bool {
	var ce *callError
	return errors.As(err, &ce) && ce.code == code
}

// withConn runs one API call on a fresh connection under --timeout.
func (c *cli) withConn(ctx context.Context, f func(context.Context, *grpc.ClientConn) error) error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	cctx, cancel := c.call(ctx)
	defer cancel()
	return f(cctx, conn)
}

// bearer sends MeshKit's API token with every call. It does not require
// transport security: MeshKit's API is plaintext h2c (loopback by default,
// behind a TLS-terminating proxy otherwise).
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }
