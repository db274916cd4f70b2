package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestSidecarInitFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    []string // in the printed rules
		wantErr string
	}{
		{name: "defaults", args: nil, want: []string{"meta skuid 1337 return", "redirect to :15001", "redirect to :15006"}},
		{name: "ports and identity", args: []string{"--outbound-port", "16001", "--inbound-port", "16006", "--proxy-uid", "-1", "--proxy-gid", "2000", "--proxy-mark", "0x10"},
			want: []string{"meta skgid 2000 return", "meta mark 0x10 return", "redirect to :16001", "redirect to :16006"}},
		{name: "port lists", args: []string{"--inbound-ports", "80,443", "--exclude-inbound-ports", "22", "--exclude-outbound-ports", "5432"},
			want: []string{"tcp dport != { 80, 443 } return", "tcp dport { 22, 15001, 15006 } return", "tcp dport { 5432 } return"}},
		{name: "cidrs", args: []string{"--include-outbound-cidrs", "10.0.0.0/8,fd00::/8", "--exclude-outbound-cidrs", "10.1.2.3"},
			want: []string{"ip daddr != { 10.0.0.0/8 } return", "ip6 daddr != { fd00::/8 } return", "ip daddr { 10.1.2.3/32 } return"}},
		{name: "outbound only", args: []string{"--no-inbound"}, want: []string{"chain output"}},
		{name: "iptables backend", args: []string{"--backend", "iptables"}, want: []string{"-A OMNIRELAY_OUTPUT -m owner --uid-owner 1337 -j RETURN", "ip6tables-restore"}},
		{name: "bad port", args: []string{"--inbound-ports", "80,http"}, wantErr: `--inbound-ports: "http" is not a port`},
		{name: "bad cidr", args: []string{"--exclude-outbound-cidrs", "10.0.0.0/33"}, wantErr: `--exclude-outbound-cidrs: "10.0.0.0/33"`},
		{name: "bad mark", args: []string{"--proxy-mark", "x"}, wantErr: `--proxy-mark "x"`},
		{name: "bad backend", args: []string{"--backend", "pf"}, wantErr: `unknown backend "pf"`},
		{name: "loop", args: []string{"--inbound-ports", "80,15006"}, wantErr: "would loop"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := newRoot()
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetArgs(append([]string{"sidecar", "init", "--dry-run"}, tc.args...))
			err := root.Execute()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("rules lack %q:\n%s", w, out.String())
				}
			}
			if tc.name == "outbound only" && strings.Contains(out.String(), "prerouting") {
				t.Errorf("--no-inbound still prints an inbound chain:\n%s", out.String())
			}
		})
	}
}
