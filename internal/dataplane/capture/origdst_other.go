//go:build !linux

package capture

import (
	"errors"
	"net"
	"net/netip"
)

// OriginalDst is only available on Linux, where the kernel's conntrack keeps
// the destination a capture rule rewrote.
func OriginalDst(net.Conn) (netip.AddrPort, bool, error) {
	return netip.AddrPort{}, false, errors.New("original destination: only supported on Linux")
}
