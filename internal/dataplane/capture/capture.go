// Package capture owns transparent traffic capture for the sidecar host: the
// packet-filter rules that send a workload's TCP traffic through its sidecar
// (outbound to the sidecar's outbound port, inbound to its inbound port) and
// the recovery of each redirected connection's original destination.
//
// Rules live in the workload's network namespace and are installed by
// `omnirelay sidecar init` (the equivalent of istio-iptables or linkerd-init)
// before the workload starts, and removed by `omnirelay sidecar cleanup`.
//
// The nftables backend puts every rule in one table of its own, so cleanup
// deletes exactly what init added and nothing else; it is applied as one nft
// transaction, so a failed init leaves nothing behind. The iptables backend
// (for hosts without nft) uses chains of its own reached by one jump rule per
// hook, removed again by cleanup. Both are driven through the nft and iptables
// commands, as Kubernetes' knftables and istio-iptables do: the commands are the
// stable interface to the kernel's rule sets, and they validate the rules
// before the kernel sees them.
//
// Loops are avoided the way Istio does: the sidecar's own connections are
// recognised by the user or group it runs as (or a socket mark it sets) and
// are never redirected; loopback traffic of the workload is not captured.
package capture

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Default ports and identity, the same as Istio's so that existing habits and
// firewall exceptions carry over.
const (
	DefaultOutboundPort = 15001
	DefaultInboundPort  = 15006
	DefaultProxyUID     = 1337
)

// Table is the nftables table (family inet) and the prefix of the iptables
// chains that hold every rule this package installs.
const Table = "omnirelay"

// Config says what to capture. The zero value of a field means its default.
type Config struct {
	// OutboundPort receives the workload's outbound TCP connections
	// (default 15001).
	OutboundPort uint16
	// InboundPort receives TCP connections to the workload (default 15006).
	InboundPort uint16
	// ProxyUID and ProxyGID identify the sidecar's own sockets, which are
	// never redirected. Nil means not used; when ProxyUID, ProxyGID and
	// ProxyMark are all unset, ProxyUID defaults to 1337.
	ProxyUID, ProxyGID *uint32
	// ProxyMark, when non-zero, also identifies the sidecar's own sockets by
	// their SO_MARK.
	ProxyMark uint32

	// InboundPorts limits inbound capture to these destination ports; empty
	// captures every port except ExcludeInboundPorts.
	InboundPorts []uint16
	// ExcludeInboundPorts are never captured inbound (ssh, the sidecar's
	// admin port, ...).
	ExcludeInboundPorts []uint16
	// ExcludeOutboundPorts are never captured outbound.
	ExcludeOutboundPorts []uint16
	// IncludeOutboundCIDRs limits outbound capture to these destinations;
	// empty captures every destination except ExcludeOutboundCIDRs.
	IncludeOutboundCIDRs []netip.Prefix
	// ExcludeOutboundCIDRs are never captured outbound.
	ExcludeOutboundCIDRs []netip.Prefix
	// NoInbound and NoOutbound turn off one direction.
	NoInbound, NoOutbound bool
}

// withDefaults returns c with defaults applied.
func (c Config) withDefaults() Config {
	if c.OutboundPort == 0 {
		c.OutboundPort = DefaultOutboundPort
	}
	if c.InboundPort == 0 {
		c.InboundPort = DefaultInboundPort
	}
	if c.ProxyUID == nil && c.ProxyGID == nil && c.ProxyMark == 0 {
		uid := uint32(DefaultProxyUID)
		c.ProxyUID = &uid
	}
	return c
}

// Validate reports a config that would capture nothing sensible or loop.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.NoInbound && c.NoOutbound {
		return fmt.Errorf("capture: both directions turned off: nothing to install")
	}
	if c.OutboundPort == c.InboundPort {
		return fmt.Errorf("capture: outbound and inbound port are both %d: they must differ", c.OutboundPort)
	}
	if len(c.InboundPorts) > 0 {
		for _, p := range []uint16{c.InboundPort, c.OutboundPort} {
			if slices.Contains(c.InboundPorts, p) {
				return fmt.Errorf("capture: inbound port list holds the sidecar's own port %d: connections to it would loop", p)
			}
		}
	}
	for _, p := range c.IncludeOutboundCIDRs {
		if !p.IsValid() {
			return fmt.Errorf("capture: invalid include CIDR")
		}
	}
	for _, p := range c.ExcludeOutboundCIDRs {
		if !p.IsValid() {
			return fmt.Errorf("capture: invalid exclude CIDR")
		}
	}
	return nil
}

// NFTRuleset returns the nft script Install applies: one inet table with a
// nat output chain (outbound) and a nat prerouting chain (inbound). The
// script first creates and flushes the table, so applying it twice gives the
// same rule set.
func NFTRuleset(c Config) string {
	c = c.withDefaults()
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\ntable inet %s {\n", Table, Table, Table)
	if !c.NoOutbound {
		b.WriteString("\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n")
		b.WriteString("\t\tmeta l4proto != tcp return\n")
		if c.ProxyUID != nil {
			fmt.Fprintf(&b, "\t\tmeta skuid %d return\n", *c.ProxyUID)
		}
		if c.ProxyGID != nil {
			fmt.Fprintf(&b, "\t\tmeta skgid %d return\n", *c.ProxyGID)
		}
		if c.ProxyMark != 0 {
			fmt.Fprintf(&b, "\t\tmeta mark %#x return\n", c.ProxyMark)
		}
		// The workload's own loopback traffic (itself, a local agent) is
		// not captured.
		b.WriteString("\t\toifname \"lo\" return\n")
		v4, v6 := splitFamilies(c.ExcludeOutboundCIDRs)
		if len(v4) > 0 {
			fmt.Fprintf(&b, "\t\tip daddr { %s } return\n", strings.Join(v4, ", "))
		}
		if len(v6) > 0 {
			fmt.Fprintf(&b, "\t\tip6 daddr { %s } return\n", strings.Join(v6, ", "))
		}
		if len(c.ExcludeOutboundPorts) > 0 {
			fmt.Fprintf(&b, "\t\ttcp dport { %s } return\n", joinPorts(c.ExcludeOutboundPorts))
		}
		if len(c.IncludeOutboundCIDRs) > 0 {
			i4, i6 := splitFamilies(c.IncludeOutboundCIDRs)
			// A family with no included range is not captured at all.
			if len(i4) > 0 {
				fmt.Fprintf(&b, "\t\tmeta nfproto ipv4 ip daddr != { %s } return\n", strings.Join(i4, ", "))
			} else {
				b.WriteString("\t\tmeta nfproto ipv4 return\n")
			}
			if len(i6) > 0 {
				fmt.Fprintf(&b, "\t\tmeta nfproto ipv6 ip6 daddr != { %s } return\n", strings.Join(i6, ", "))
			} else {
				b.WriteString("\t\tmeta nfproto ipv6 return\n")
			}
		}
		fmt.Fprintf(&b, "\t\tmeta l4proto tcp redirect to :%d\n\t}\n", c.OutboundPort)
	}
	if !c.NoInbound {
		b.WriteString("\tchain prerouting {\n\t\ttype nat hook prerouting priority -100; policy accept;\n")
		b.WriteString("\t\tmeta l4proto != tcp return\n")
		// Connections addressed to the sidecar's own ports are its own.
		fmt.Fprintf(&b, "\t\ttcp dport { %s } return\n", joinPorts(sortedUnique(append([]uint16{c.InboundPort, c.OutboundPort}, c.ExcludeInboundPorts...))))
		if len(c.InboundPorts) > 0 {
			fmt.Fprintf(&b, "\t\ttcp dport != { %s } return\n", joinPorts(c.InboundPorts))
		}
		fmt.Fprintf(&b, "\t\tmeta l4proto tcp redirect to :%d\n\t}\n", c.InboundPort)
	}
	b.WriteString("}\n")
	return b.String()
}

// NFTCleanup is the nft script Cleanup applies: it deletes the table and so
// every rule Install added, and succeeds when there is none.
func NFTCleanup() string {
	return fmt.Sprintf("table inet %s\ndelete table inet %s\n", Table, Table)
}

func splitFamilies(ps []netip.Prefix) (v4, v6 []string) {
	for _, p := range ps {
		p = p.Masked()
		if p.Addr().Is4() || p.Addr().Is4In6() {
			v4 = append(v4, netip.PrefixFrom(p.Addr().Unmap(), min(p.Bits(), 32)).String())
		} else {
			v6 = append(v6, p.String())
		}
	}
	return v4, v6
}

func joinPorts(ps []uint16) string {
	ps = sortedUnique(ps)
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ", ")
}

func sortedUnique(ps []uint16) []uint16 {
	ps = slices.Clone(ps)
	slices.Sort(ps)
	return slices.Compact(ps)
}

// HasNetAdmin reports whether the process may change the network
// namespace's packet filter (CAP_NET_ADMIN in its effective set).
func HasNetAdmin() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<capNetAdmin) != 0
		}
	}
	return false
}

const capNetAdmin = 12
