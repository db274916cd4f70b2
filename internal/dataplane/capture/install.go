package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Backend names the rule-set interface Install and Cleanup drive.
type Backend string

const (
	// Auto picks NFT when the nft command is present, else IPTables.
	Auto Backend = ""
	// NFT installs one inet table with nft.
	NFT Backend = "nft"
	// IPTables installs chains of its own with iptables-restore and
	// ip6tables-restore (for hosts without nft).
	IPTables Backend = "iptables"
)

// ParseBackend reads a backend name as the CLI takes it.
func ParseBackend(s string) (Backend, error) {
	switch s {
	case "", "auto":
		return Auto, nil
	case "nft", "nftables":
		return NFT, nil
	case "iptables":
		return IPTables, nil
	}
	return "", fmt.Errorf("capture: unknown backend %q (want auto, nft or iptables)", s)
}

// Resolve returns the backend Auto stands for on this host.
func (b Backend) Resolve() (Backend, error) {
	if b != Auto {
		return b, nil
	}
	if _, err := exec.LookPath("nft"); err == nil {
		return NFT, nil
	}
	if _, err := exec.LookPath("iptables-restore"); err == nil {
		return IPTables, nil
	}
	return "", errors.New("capture: neither nft nor iptables-restore is installed")
}

// ErrNoNetAdmin is returned when the process lacks CAP_NET_ADMIN.
var ErrNoNetAdmin = errors.New("capture: CAP_NET_ADMIN is needed to change this network namespace's packet filter (run as root or grant the capability)")

// Install applies c's rules in the current network namespace, replacing
// rules an earlier Install left. On error nothing of this call stays
// installed.
func Install(ctx context.Context, c Config, b Backend) error {
	if err := c.Validate(); err != nil {
		return err
	}
	b, err := ready(b)
	if err != nil {
		return err
	}
	switch b {
	case NFT:
		return run(ctx, NFTRuleset(c), "nft", "-f", "-")
	case IPTables:
		if err := cleanupIPTables(ctx); err != nil {
			return err
		}
		if err := run(ctx, IPTablesRestore(c, false), "iptables-restore", "--noflush"); err != nil {
			return err
		}
		if err := run(ctx, IPTablesRestore(c, true), "ip6tables-restore", "--noflush"); err != nil {
			_ = cleanupIPTables(ctx)
			return err
		}
		return nil
	}
	return fmt.Errorf("capture: unknown backend %q", b)
}

// Cleanup removes every rule Install added in the current network
// namespace. It succeeds when there is nothing to remove.
func Cleanup(ctx context.Context, b Backend) error {
	b, err := ready(b)
	if err != nil {
		return err
	}
	switch b {
	case NFT:
		return run(ctx, NFTCleanup(), "nft", "-f", "-")
	case IPTables:
		return cleanupIPTables(ctx)
	}
	return fmt.Errorf("capture: unknown backend %q", b)
}

// ready checks the process may change the packet filter and resolves b.
func ready(b Backend) (Backend, error) {
	if !HasNetAdmin() {
		return "", ErrNoNetAdmin
	}
	return b.Resolve()
}

func run(ctx context.Context, stdin string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("capture: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// iptables chain names, all under the Table prefix.
var (
	chainOut        = strings.ToUpper(Table) + "_OUTPUT"
	chainOutRedir   = strings.ToUpper(Table) + "_REDIRECT"
	chainIn         = strings.ToUpper(Table) + "_INBOUND"
	chainInRedir    = strings.ToUpper(Table) + "_IN_REDIRECT"
	jumpOutputRule  = []string{"OUTPUT", "-p", "tcp", "-j", chainOut}
	jumpPreroutRule = []string{"PREROUTING", "-p", "tcp", "-j", chainIn}
)

// IPTablesRestore returns the iptables-restore (or, with v6, the
// ip6tables-restore) input Install applies with --noflush: the chains of its
// own and one jump from each hook chain into them.
func IPTablesRestore(c Config, v6 bool) string {
	c = c.withDefaults()
	var b strings.Builder
	b.WriteString("*nat\n")
	if !c.NoOutbound {
		fmt.Fprintf(&b, ":%s - [0:0]\n:%s - [0:0]\n", chainOut, chainOutRedir)
	}
	if !c.NoInbound {
		fmt.Fprintf(&b, ":%s - [0:0]\n:%s - [0:0]\n", chainIn, chainInRedir)
	}
	if !c.NoOutbound {
		fmt.Fprintf(&b, "-A %s -p tcp -j REDIRECT --to-ports %d\n", chainOutRedir, c.OutboundPort)
		if c.ProxyUID != nil {
			fmt.Fprintf(&b, "-A %s -m owner --uid-owner %d -j RETURN\n", chainOut, *c.ProxyUID)
		}
		if c.ProxyGID != nil {
			fmt.Fprintf(&b, "-A %s -m owner --gid-owner %d -j RETURN\n", chainOut, *c.ProxyGID)
		}
		if c.ProxyMark != 0 {
			fmt.Fprintf(&b, "-A %s -m mark --mark %#x -j RETURN\n", chainOut, c.ProxyMark)
		}
		fmt.Fprintf(&b, "-A %s -o lo -j RETURN\n", chainOut)
		v4, v6s := splitFamilies(c.ExcludeOutboundCIDRs)
		for _, p := range pick(v4, v6s, v6) {
			fmt.Fprintf(&b, "-A %s -d %s -j RETURN\n", chainOut, p)
		}
		if len(c.ExcludeOutboundPorts) > 0 {
			fmt.Fprintf(&b, "-A %s -p tcp -m multiport --dports %s -j RETURN\n", chainOut, strings.ReplaceAll(joinPorts(c.ExcludeOutboundPorts), " ", ""))
		}
		if len(c.IncludeOutboundCIDRs) > 0 {
			i4, i6 := splitFamilies(c.IncludeOutboundCIDRs)
			for _, p := range pick(i4, i6, v6) {
				fmt.Fprintf(&b, "-A %s -d %s -j %s\n", chainOut, p, chainOutRedir)
			}
		} else {
			fmt.Fprintf(&b, "-A %s -j %s\n", chainOut, chainOutRedir)
		}
		fmt.Fprintf(&b, "-A %s\n", strings.Join(jumpOutputRule, " "))
	}
	if !c.NoInbound {
		fmt.Fprintf(&b, "-A %s -p tcp -j REDIRECT --to-ports %d\n", chainInRedir, c.InboundPort)
		own := sortedUnique(append([]uint16{c.InboundPort, c.OutboundPort}, c.ExcludeInboundPorts...))
		fmt.Fprintf(&b, "-A %s -p tcp -m multiport --dports %s -j RETURN\n", chainIn, strings.ReplaceAll(joinPorts(own), " ", ""))
		if len(c.InboundPorts) > 0 {
			fmt.Fprintf(&b, "-A %s -p tcp -m multiport --dports %s -j %s\n", chainIn, strings.ReplaceAll(joinPorts(c.InboundPorts), " ", ""), chainInRedir)
		} else {
			fmt.Fprintf(&b, "-A %s -p tcp -j %s\n", chainIn, chainInRedir)
		}
		fmt.Fprintf(&b, "-A %s\n", strings.Join(jumpPreroutRule, " "))
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

func pick(v4, v6 []string, six bool) []string {
	if six {
		return v6
	}
	return v4
}

// cleanupIPTables removes the jumps and chains of both families. Missing
// ones are not an error: cleanup after a partial or no install succeeds.
func cleanupIPTables(ctx context.Context) error {
	for _, bin := range []string{"iptables", "ip6tables"} {
		if _, err := exec.LookPath(bin); err != nil {
			continue
		}
		for _, jump := range [][]string{jumpOutputRule, jumpPreroutRule} {
			// Delete every copy of the jump (an interrupted init may have
			// added it twice); -C tells whether one is left.
			for i := 0; i < 16 && exec.CommandContext(ctx, bin, append([]string{"-w", "-t", "nat", "-C"}, jump...)...).Run() == nil; i++ {
				if err := run(ctx, "", bin, append([]string{"-w", "-t", "nat", "-D"}, jump...)...); err != nil {
					return err
				}
			}
		}
		for _, ch := range []string{chainOut, chainIn, chainOutRedir, chainInRedir} {
			if exec.CommandContext(ctx, bin, "-w", "-t", "nat", "-S", ch).Run() != nil {
				continue // no such chain
			}
			if err := run(ctx, "", bin, "-w", "-t", "nat", "-F", ch); err != nil {
				return err
			}
		}
		for _, ch := range []string{chainOut, chainIn, chainOutRedir, chainInRedir} {
			if exec.CommandContext(ctx, bin, "-w", "-t", "nat", "-S", ch).Run() != nil {
				continue
			}
			if err := run(ctx, "", bin, "-w", "-t", "nat", "-X", ch); err != nil {
				return err
			}
		}
	}
	return nil
}
