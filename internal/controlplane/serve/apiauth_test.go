package serve

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

type bearerCreds string

func (b bearerCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearerCreds) RequireTransportSecurity() bool { return false }

// TestAPIToken: with a token, every API call (gRPC and JSON) without it or
// with another is refused as unauthenticated, identity admin included; with
// it, calls work. An API on a non-loopback address without a token does not
// start.
func TestAPIToken(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef-test"
	p, err := Start(Options{XDSAddress: "127.0.0.1:0", APIAddress: "127.0.0.1:0", IdentityAddress: "127.0.0.1:0",
		DataDir: t.TempDir(), APIToken: token, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	}()
	ctx := context.Background()
	admin := func(tok string) error {
		opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		if tok != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(bearerCreds(tok)))
		}
		conn, err := grpc.NewClient(p.APIAddr().String(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = meshkitv1.NewIdentityAdminClient(conn).CreateJoinToken(ctx,
			&meshkitv1.CreateJoinTokenRequest{NodeId: "web-1", SpiffeId: "spiffe://omnirelay.local/ns/shop/sa/web"})
		return err
	}
	for _, tok := range []string{"", "wrong", token + "x"} {
		if err := admin(tok); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("token %q: %v, want UNAUTHENTICATED", tok, err)
		}
	}
	if err := admin(token); err != nil {
		t.Fatalf("with the token: %v", err)
	}
	get := func(auth string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.APIAddr().String()+"/v1/services", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := get(""); c != http.StatusUnauthorized {
		t.Fatalf("JSON without token: %d", c)
	}
	if c := get("Bearer " + token); c != http.StatusOK {
		t.Fatalf("JSON with token: %d", c)
	}

	if _, err := Start(Options{XDSAddress: "127.0.0.1:0", APIAddress: "0.0.0.0:0", IdentityAddress: "",
		DataDir: t.TempDir(), Log: slog.New(slog.DiscardHandler)}); err == nil || !strings.Contains(err.Error(), "--api-token-file") {
		t.Fatalf("open API on all interfaces without a token: %v", err)
	}
}

func TestReadAPIToken(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		content string
		ok      bool
	}{
		"good":       {"  0123456789abcdef0123456789abcdef\n", true},
		"short":      {"secret\n", false},
		"two tokens": {"0123456789abcdef 0123456789abcdef0\n", false},
	} {
		t.Run(name, func(t *testing.T) {
			f := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
			if err := os.WriteFile(f, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			tok, err := ReadAPIToken(f)
			if (err == nil) != tc.ok {
				t.Fatalf("ReadAPIToken: %q, %v", tok, err)
			}
		})
	}
}
