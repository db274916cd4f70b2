package translate

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// TestNetworkExtensions: extension filters on tcp and tls listeners become
// network filters before tcp_proxy on every chain (connection RBAC first);
// HTTP filters there, and canaries, are refused.
func TestNetworkExtensions(t *testing.T) {
	dir := t.TempDir()
	writePackage(t, dir, "guard.orx", "v1")
	tests := []struct {
		name, listener string
		want           []string // filter names per chain
		wantErr        string
	}{
		{name: "tcp", listener: `{ name: l, address: 127.0.0.1:80, protocol: tcp, cluster: a,
			filters: [{ extension: { name: guard, package: guard.orx } }, { extension: { name: two, package: guard.orx } }] }`,
			want: []string{NameExtensionPrefix + "guard," + NameExtensionPrefix + "two," + NameTCPProxy}},
		{name: "rbac goes first", listener: `{ name: l, address: 127.0.0.1:80, protocol: tcp, cluster: a,
			connection_rbac: [{ action: DENY, policies: { p: { principals: [{ source_ip: [10.0.0.0/8] }] } } }],
			filters: [{ extension: { name: guard, package: guard.orx } }] }`,
			want: []string{NameNetworkRBAC + "," + NameExtensionPrefix + "guard," + NameTCPProxy}},
		{name: "tls: every sni chain", listener: `{ name: l, address: 127.0.0.1:80, protocol: tls, cluster: a,
			sni_routes: [{ sni: [a.example.com], cluster: a }], filters: [{ extension: { name: guard, package: guard.orx } }] }`,
			want: []string{NameExtensionPrefix + "guard," + NameTCPProxy, NameExtensionPrefix + "guard," + NameTCPProxy}},
		{name: "http filter on tcp", listener: `{ name: l, address: 127.0.0.1:80, protocol: tcp, cluster: a,
			filters: [{ fault: { abort: { status: 503 } } }] }`, wantErr: "extension filters are allowed"},
		{name: "canary on tcp", listener: `{ name: l, address: 127.0.0.1:80, protocol: tcp, cluster: a,
			filters: [{ extension: { name: guard, package: guard.orx, canary: { percent: 5, previous_package: guard.orx } } }] }`,
			wantErr: "canary is not supported"},
		{name: "same name twice", listener: `{ name: l, address: 127.0.0.1:80, protocol: tcp, cluster: a,
			filters: [{ extension: { name: g, package: guard.orx } }, { extension: { name: g, package: guard.orx } }] }`,
			wantErr: "listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Parse(filepath.Join(dir, "omnirelay.yaml"), []byte("listeners: ["+tt.listener+"]\n"+backends))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			snap, err := Translate(c)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, fc := range snap.Listeners[0].GetFilterChains() {
				var names []string
				for _, f := range fc.GetFilters() {
					names = append(names, f.GetName())
				}
				got = append(got, strings.Join(names, ","))
			}
			if strings.Join(got, " | ") != strings.Join(tt.want, " | ") {
				t.Fatalf("chains = %q, want %q", got, tt.want)
			}
		})
	}
}
