//go:build unix

package sds

import (
	"net"
	"os"
	"syscall"
)

func listenUnixPrivate(path string) (net.Listener, error) {
	// umask is process-wide: restore it at once. Chmod after bind would
	// leave a moment in which the socket is open to others.
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
