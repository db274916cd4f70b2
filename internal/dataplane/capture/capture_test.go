package capture

import (
	"net/netip"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		want string
	}{
		{"nothing to do", Config{NoInbound: true, NoOutbound: true}, "both directions"},
		{"same ports", Config{OutboundPort: 15001, InboundPort: 15001}, "must differ"},
		{"inbound list holds a sidecar port", Config{InboundPorts: []uint16{80, 15006}}, "would loop"},
		{"invalid prefix", Config{ExcludeOutboundCIDRs: []netip.Prefix{{}}}, "invalid exclude CIDR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}

func TestRulesetDefaults(t *testing.T) {
	s := NFTRuleset(Config{})
	for _, want := range []string{"meta skuid 1337 return", "redirect to :15001", "redirect to :15006", "tcp dport { 15001, 15006 } return", `oifname "lo" return`} {
		if !strings.Contains(s, want) {
			t.Errorf("default ruleset lacks %q:\n%s", want, s)
		}
	}
	if s := NFTRuleset(Config{NoInbound: true}); strings.Contains(s, "prerouting") {
		t.Errorf("NoInbound still has an inbound chain:\n%s", s)
	}
}

func TestParseBackend(t *testing.T) {
	for in, want := range map[string]Backend{"": Auto, "auto": Auto, "nft": NFT, "nftables": NFT, "iptables": IPTables} {
		if got, err := ParseBackend(in); err != nil || got != want {
			t.Errorf("ParseBackend(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseBackend("pf"); err == nil {
		t.Error("ParseBackend(pf): no error")
	}
}
