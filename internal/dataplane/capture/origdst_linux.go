package capture

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket options of the kernel's conntrack: the destination a connection had
// before a REDIRECT or DNAT rewrote it (linux/netfilter_ipv4.h and
// linux/netfilter_ipv6/ip6_tables.h; both are 80).
const (
	soOriginalDst   = 80
	ip6tSoOriginDst = 80
)

// OriginalDst returns the destination c was addressed to before a capture
// rule redirected it. ok is false when the connection was not redirected (the
// original destination is then c's local address) or is not a TCP socket.
func OriginalDst(c net.Conn) (dst netip.AddrPort, ok bool, err error) {
	sc, isSys := c.(syscall.Conn)
	if !isSys {
		return netip.AddrPort{}, false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, false, fmt.Errorf("original destination: %w", err)
	}
	local, _ := c.LocalAddr().(*net.TCPAddr)
	if local == nil {
		return netip.AddrPort{}, false, nil
	}
	v6 := local.IP.To4() == nil
	var serr error
	cerr := rc.Control(func(fd uintptr) {
		if v6 {
			// The kernel writes a sockaddr_in6 (28 bytes); IPv6MTUInfo
			// starts with one and is large enough.
			var mi *unix.IPv6MTUInfo
			mi, serr = unix.GetsockoptIPv6MTUInfo(int(fd), unix.IPPROTO_IPV6, ip6tSoOriginDst)
			if serr == nil {
				// Port is in network byte order in memory, whatever the host's.
				pb := (*[2]byte)(unsafe.Pointer(&mi.Addr.Port))
				dst = netip.AddrPortFrom(netip.AddrFrom16(mi.Addr.Addr).Unmap(), uint16(pb[0])<<8|uint16(pb[1]))
			}
			return
		}
		// The kernel writes a sockaddr_in (16 bytes); IPv6Mreq (20 bytes)
		// holds it.
		var mr *unix.IPv6Mreq
		mr, serr = unix.GetsockoptIPv6Mreq(int(fd), unix.IPPROTO_IP, soOriginalDst)
		if serr == nil {
			raw := mr.Multiaddr // sockaddr_in: family(2) port(2, big endian) addr(4)
			port := uint16(raw[2])<<8 | uint16(raw[3])
			dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte{raw[4], raw[5], raw[6], raw[7]}), port)
		}
	})
	if cerr != nil {
		return netip.AddrPort{}, false, fmt.Errorf("original destination: %w", cerr)
	}
	if serr != nil {
		if serr == unix.ENOENT {
			// No conntrack entry with a NAT binding: not redirected.
			return netip.AddrPort{}, false, nil
		}
		return netip.AddrPort{}, false, fmt.Errorf("original destination: getsockopt: %w", serr)
	}
	if dst == local.AddrPort() || dst == netip.AddrPortFrom(local.AddrPort().Addr().Unmap(), local.AddrPort().Port()) {
		return dst, false, nil
	}
	return dst, true, nil
}
