package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/omnirelay/omnirelay/internal/controlplane/identity"
	"github.com/omnirelay/omnirelay/internal/controlplane/store"
)

// startIdentityAdmin serves the real IdentityAdmin on 127.0.0.1 over a
// bbolt store, as MeshKit's API port does.
func startIdentityAdmin(t *testing.T) string {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "meshkit.db"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := identity.LoadOrCreateCA(context.Background(), st, spiffeid.RequireTrustDomainFromString("omnirelay.local"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := identity.NewService(identity.Options{CA: ca, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	svc.RegisterAdmin(g)
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(l) }()
	t.Cleanup(func() { g.Stop(); <-done; st.Close() })
	return l.Addr().String()
}

func TestTokenAndNodeCommands(t *testing.T) {
	addr := startIdentityAdmin(t)
	caOut := filepath.Join(t.TempDir(), "ca.pem")
	const web = "spiffe://omnirelay.local/ns/shop/sa/web"
	steps := []struct {
		name    string
		args    []string
		wantErr []string
		want    []string
	}{
		{name: "token create", args: []string{"token", "create", "--node", "web-1", "--spiffe-id", web, "--ca-out", caOut},
			want: []string{"token ", "node          web-1", "spiffe id     " + web, "trust bundle  " + caOut}},
		{name: "token create json", args: []string{"token", "create", "--node", "web-2", "--spiffe-id", web, "--ttl", "10m", "-o", "json"},
			want: []string{`"token": "`, `"expires_at": "`, `"trust_bundle_pem": "`}},
		{name: "token create without flags", args: []string{"token", "create"}, wantErr: []string{"--node and --spiffe-id are required"}},
		{name: "token create bad id", args: []string{"token", "create", "--node", "n", "--spiffe-id", "spiffe://other.test/ns/a/sa/b"},
			wantErr: []string{"InvalidArgument", "not in trust domain"}},
		{name: "node list", args: []string{"node", "list"}, want: []string{"NODE", "web-1  " + web + "  pending", "web-2"}},
		{name: "node revoke", args: []string{"node", "revoke", "web-1"}, want: []string{"revoked node web-1 (1 unused join tokens dropped)"}},
		{name: "node list after revoke", args: []string{"node", "list", "-o", "yaml"}, want: []string{"node_id: web-1", "revoked: true"}},
		{name: "token for a revoked node", args: []string{"token", "create", "--node", "web-1", "--spiffe-id", web},
			wantErr: []string{"FailedPrecondition", "revoked"}},
		{name: "revoke unknown node", args: []string{"node", "revoke", "ghost"}, wantErr: []string{"NotFound"}},
		{name: "revoke without node", args: []string{"node", "revoke"}, wantErr: []string{"accepts 1 arg"}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			out, _, err := run(t.Context(), addr, s.args...)
			if s.wantErr != nil {
				if err == nil {
					t.Fatalf("succeeded, want an error; stdout:\n%s", out)
				}
				for _, w := range s.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error lacks %q:\n%v", w, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range s.want {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
		})
	}
	data, err := os.ReadFile(caOut)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatal("--ca-out wrote no PEM")
	}
	if c, err := x509.ParseCertificate(b.Bytes); err != nil || !c.IsCA {
		t.Fatalf("--ca-out: %v, want the CA root", err)
	}
}
