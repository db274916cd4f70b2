package serve

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
)

// minAPITokenLen keeps guessable tokens out: 32 characters of a random
// base64 or hex string is well over 128 bits.
const minAPITokenLen = 32

// ReadAPIToken reads a bearer token file (surrounding whitespace ignored).
func ReadAPIToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("api token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < minAPITokenLen {
		return "", fmt.Errorf("api token %s: %d characters; want at least %d (e.g. openssl rand -hex 32)", path, len(tok), minAPITokenLen)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("api token %s: must be one line without spaces", path)
	}
	return tok, nil
}

// checkAPIExposure refuses an API reachable beyond this machine without a
// token: the API applies config, registers endpoints and (with identity)
// mints join tokens, so an open one hands out the mesh's identities.
func checkAPIExposure(addr, token string, insecure bool) error {
	if token != "" || insecure {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("api address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return errors.New("api address " + addr + " is reachable from other machines: give --api-token-file (or --api-insecure to serve it unauthenticated)")
}

// requireToken lets through requests bearing the token; others get 401
// (JSON) or UNAUTHENTICATED (gRPC). The comparison takes the same time
// whatever the prefix matched.
func requireToken(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) == 1 {
			next.ServeHTTP(w, r)
			return
		}
		msg := "missing bearer token"
		if len(got) > 0 {
			msg = "invalid bearer token"
		}
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			// A trailers-only gRPC response, so that the client sees the
			// status rather than an HTTP error.
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", "16") // UNAUTHENTICATED
			w.Header().Set("Grpc-Message", msg)
			w.WriteHeader(http.StatusOK)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="meshkit"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, "{\"code\":16,\"message\":%q}\n", msg)
	})
}
