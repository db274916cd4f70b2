package main

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/omnirelay/omnirelay/internal/dataplane/capture"
)

// sidecarCmd is `omnirelay sidecar init|cleanup`: the rules that capture a
// workload's traffic, run in the workload's network namespace before it
// starts (as istio-iptables or linkerd-init are).
func sidecarCmd() *cobra.Command {
	sc := &cobra.Command{
		Use:   "sidecar",
		Short: "Install or remove the rules that send a workload's TCP traffic through its sidecar",
	}
	var (
		c                        capture.Config
		uid, gid                 int
		mark                     string
		inPorts, exInPorts       string
		exOutPorts               string
		inclCIDRs, exclCIDRs     string
		backend                  string
		dryRun                   bool
		noInbound, noOutbound    bool
		outboundPort, inboundPrt uint16
	)
	parse := func() (capture.Config, capture.Backend, error) {
		c.OutboundPort, c.InboundPort = outboundPort, inboundPrt
		c.NoInbound, c.NoOutbound = noInbound, noOutbound
		c.ProxyUID, c.ProxyGID = optID(uid), optID(gid)
		var err error
		if mark != "" {
			m, perr := strconv.ParseUint(mark, 0, 32)
			if perr != nil {
				return c, "", fmt.Errorf("--proxy-mark %q: %w", mark, perr)
			}
			c.ProxyMark = uint32(m)
		}
		if c.InboundPorts, err = ports("--inbound-ports", inPorts); err != nil {
			return c, "", err
		}
		if c.ExcludeInboundPorts, err = ports("--exclude-inbound-ports", exInPorts); err != nil {
			return c, "", err
		}
		if c.ExcludeOutboundPorts, err = ports("--exclude-outbound-ports", exOutPorts); err != nil {
			return c, "", err
		}
		if c.IncludeOutboundCIDRs, err = cidrs("--include-outbound-cidrs", inclCIDRs); err != nil {
			return c, "", err
		}
		if c.ExcludeOutboundCIDRs, err = cidrs("--exclude-outbound-cidrs", exclCIDRs); err != nil {
			return c, "", err
		}
		b, err := capture.ParseBackend(backend)
		if err != nil {
			return c, "", err
		}
		return c, b, c.Validate()
	}
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Install the capture rules in this network namespace (needs CAP_NET_ADMIN)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, b, err := parse()
			if err != nil {
				return err
			}
			if dryRun {
				if b, err = b.Resolve(); err != nil {
					b = capture.NFT
				}
				if b == capture.IPTables {
					fmt.Fprint(cmd.OutOrStdout(), "# iptables-restore --noflush\n", capture.IPTablesRestore(c, false),
						"# ip6tables-restore --noflush\n", capture.IPTablesRestore(c, true))
				} else {
					fmt.Fprint(cmd.OutOrStdout(), capture.NFTRuleset(c))
				}
				return nil
			}
			return capture.Install(cmd.Context(), c, b)
		},
	}
	f := initCmd.Flags()
	f.Uint16Var(&outboundPort, "outbound-port", capture.DefaultOutboundPort, "port the sidecar takes captured outbound connections on")
	f.Uint16Var(&inboundPrt, "inbound-port", capture.DefaultInboundPort, "port the sidecar takes captured inbound connections on")
	f.IntVar(&uid, "proxy-uid", capture.DefaultProxyUID, "user id the sidecar runs as: its connections are not captured (-1: none)")
	f.IntVar(&gid, "proxy-gid", -1, "group id the sidecar runs as: its connections are not captured (-1: none)")
	f.StringVar(&mark, "proxy-mark", "", "socket mark (SO_MARK) of the sidecar's connections: not captured")
	f.StringVar(&inPorts, "inbound-ports", "*", "inbound destination ports to capture, comma separated, or * for all")
	f.StringVar(&exInPorts, "exclude-inbound-ports", "", "inbound ports never captured (e.g. 22), comma separated")
	f.StringVar(&exOutPorts, "exclude-outbound-ports", "", "outbound destination ports never captured, comma separated")
	f.StringVar(&inclCIDRs, "include-outbound-cidrs", "*", "outbound destinations to capture, comma separated CIDRs, or * for all")
	f.StringVar(&exclCIDRs, "exclude-outbound-cidrs", "", "outbound destinations never captured, comma separated CIDRs")
	f.BoolVar(&noInbound, "no-inbound", false, "do not capture inbound traffic")
	f.BoolVar(&noOutbound, "no-outbound", false, "do not capture outbound traffic")
	f.BoolVar(&dryRun, "dry-run", false, "print the rules instead of installing them")
	f.StringVar(&backend, "backend", "auto", "rule backend: auto (nft when installed, else iptables), nft, iptables")

	var cleanupBackend string
	cleanup := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove every capture rule init installed in this network namespace",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := capture.ParseBackend(cleanupBackend)
			if err != nil {
				return err
			}
			return capture.Cleanup(cmd.Context(), b)
		},
	}
	cleanup.Flags().StringVar(&cleanupBackend, "backend", "auto", "rule backend init used: auto, nft, iptables")
	sc.AddCommand(initCmd, cleanup)
	return sc
}

func optID(v int) *uint32 {
	if v < 0 {
		return nil
	}
	u := uint32(v)
	return &u
}

func ports(flag, s string) ([]uint16, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "*" {
		return nil, nil
	}
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		p, err := strconv.ParseUint(strings.TrimSpace(f), 10, 16)
		if err != nil || p == 0 {
			return nil, fmt.Errorf("%s: %q is not a port (1-65535)", flag, f)
		}
		out = append(out, uint16(p))
	}
	return out, nil
}

func cidrs(flag, s string) ([]netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "*" {
		return nil, nil
	}
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, fmt.Errorf("%s: %q is not a CIDR or an address", flag, f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p)
	}
	return out, nil
}
