package testutil

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// LogEnv names the environment variable that makes Logger write debug logs
// to stderr (E2E_LOG=1 go test ./internal/e2e -run X).
const LogEnv = "E2E_LOG"

// Logger returns a logger for a component a test starts: silent unless
// $E2E_LOG is set, then debug to stderr tagged with the test's name.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv(LogEnv) != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// Shutdowner is what a started proxy or MeshKit offers to stop it.
type Shutdowner interface {
	Shutdown(context.Context) error
}

// ShutdownTimeout bounds the shutdown ShutdownAtCleanup does.
const ShutdownTimeout = 10 * time.Second

// ShutdownAtCleanup shuts s down when the test ends, giving in-flight work
// ShutdownTimeout. Shutdown waits for s's goroutines, so a goleak check run
// after the tests sees none of them.
func ShutdownAtCleanup(t testing.TB, s Shutdowner) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
}

// Render replaces each {{name}} in tmpl with vars[name].
func Render(tmpl string, vars map[string]string) string {
	for k, v := range vars {
		tmpl = strings.ReplaceAll(tmpl, "{{"+k+"}}", v)
	}
	return tmpl
}

// WriteFile writes data to path atomically (a temporary file renamed over
// it), so that a watcher polling path never reads half a file.
func WriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// KeyPair is a fresh ed25519 signing key written as `meshkit keygen` does.
type KeyPair struct {
	Public  ed25519.PublicKey
	Private ed25519.PrivateKey
	// KeyFile is the PEM private key (MeshKit's --signing-key), TrustFile
	// the PEM public key (a proxy's trust root).
	KeyFile, TrustFile string
}

// NewKeyPair generates a key pair and writes it to dir/name.key and
// dir/name.pub.pem.
func NewKeyPair(t testing.TB, dir, name string) KeyPair {
	t.Helper()
	pub, priv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k := KeyPair{Public: pub, Private: priv,
		KeyFile: filepath.Join(dir, name+".key"), TrustFile: filepath.Join(dir, name+".pub.pem")}
	if err := signing.WritePrivateKey(k.KeyFile, priv); err != nil {
		t.Fatal(err)
	}
	if err := signing.WritePublicKey(k.TrustFile, pub); err != nil {
		t.Fatal(err)
	}
	return k
}
