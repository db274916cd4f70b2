package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
)

// SplitAddress splits "host:port" (IPv6 hosts in brackets) and checks the
// port is 1-65535. The host may be empty (any address, for listeners).
func SplitAddress(addr string) (host string, port uint32, err error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return "", 0, fmt.Errorf("%s (want host:port)", ae.Err)
		}
		return "", 0, err
	}
	n, err := strconv.ParseUint(p, 10, 32)
	if err != nil || n < 1 || n > 65535 {
		return "", 0, fmt.Errorf("port %q is not a number in 1-65535", p)
	}
	return h, uint32(n), nil
}

// ListenHost returns the IP a listener's host binds: an empty host (":8080")
// means every IPv4 address.
func ListenHost(host string) string {
	if host == "" {
		return "0.0.0.0"
	}
	return host
}

// checkListenAddress validates an address the proxy binds: proxies (like
// Envoy) bind IP addresses, never names.
func checkListenAddress(addr string) (netip.AddrPort, error) {
	host, port, err := SplitAddress(addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ip, err := netip.ParseAddr(ListenHost(host))
	if err != nil || ip.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("host %q is not an IP address (listeners bind IP addresses; use 0.0.0.0 or 127.0.0.1)", host)
	}
	return netip.AddrPortFrom(ip, uint16(port)), nil
}

// checkUpstreamAddress validates an endpoint address; the host is an IP
// address or a DNS name. It reports whether the host is an IP.
func checkUpstreamAddress(addr string) (isIP bool, err error) {
	host, _, err := SplitAddress(addr)
	if err != nil {
		return false, err
	}
	if host == "" {
		return false, fmt.Errorf("host is empty (want host:port)")
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true, nil
	}
	if !isDNSName(host) {
		return false, fmt.Errorf("host %q is neither an IP address nor a DNS name", host)
	}
	return false, nil
}

// isDNSName reports whether s is a syntactically valid host name (RFC 1123
// labels; underscores tolerated, as resolvers do).
func isDNSName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// overlaps reports whether two bound addresses conflict: same port and the
// same IP, or one of them the unspecified address of the same family.
func overlaps(a, b netip.AddrPort) bool {
	if a.Port() != b.Port() {
		return false
	}
	ai, bi := a.Addr().Unmap(), b.Addr().Unmap()
	if ai == bi {
		return true
	}
	if ai.Is4() != bi.Is4() {
		return false
	}
	return ai.IsUnspecified() || bi.IsUnspecified()
}

// FilePath resolves a path written in the config: relative paths are
// relative to the directory of the config file (the working directory for a
// Config built in code).
func (c *Config) FilePath(p string) string {
	if p == "" || filepath.IsAbs(p) || c.src == nil || c.src.file == "" {
		return p
	}
	return filepath.Join(filepath.Dir(c.src.file), p)
}
