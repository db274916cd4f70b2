package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/controlplane/serve"
	"github.com/omnirelay/omnirelay/internal/testutil/meshtest"
)

// TestAPITLS: against a MeshKit serving its API over TLS (--api-tls, with a
// token), omnictl works with --ca-file and the bundle MeshKit wrote
// (--ca-bundle-out), and fails without it; the JSON gateway answers HTTPS
// with the token and refuses plaintext HTTP.
func TestAPITLS(t *testing.T) {
	const token = "omnictl-test-token-0123456789abcdef"
	dir := t.TempDir()
	bundle := filepath.Join(dir, "ca.pem")
	p := meshtest.Start(t, serve.Options{IdentityAddress: "127.0.0.1:0",
		DataDir: dir, APIToken: token, APITLS: true, CABundleOut: bundle})
	addr := p.APIAddr().String()
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string // "" = succeeds
	}{
		{"tls with the bundle", []string{"--ca-file", bundle, "--token-file", tokFile, "get", "services"}, ""},
		{"plaintext against tls", []string{"--timeout", "2s", "--token-file", tokFile, "get", "services"}, "Unavailable"},
		{"tls without the token", []string{"--ca-file", bundle, "get", "services"}, "Unauthenticated: missing bearer token"},
		{"bundle file missing", []string{"--ca-file", filepath.Join(dir, "nope.pem"), "get", "services"}, "--ca-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := run(ctx, addr, tc.args...)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("%v %s", err, stderr)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error()+stderr, tc.wantErr)):
				t.Fatalf("err %v, stderr %q; want %q", err, stderr, tc.wantErr)
			}
		})
	}

	pemData, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemData)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest("GET", "https://"+addr+"/v1/services", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("JSON over HTTPS: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("JSON over HTTPS: %d %s", resp.StatusCode, body)
	}
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/v1/services"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest { // net/http answers plaintext on a TLS port with 400
			t.Fatalf("plaintext HTTP against the TLS API: %d", resp.StatusCode)
		}
	}
}
