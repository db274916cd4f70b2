//go:build !unix

package sds

import "net"

func listenUnixPrivate(path string) (net.Listener, error) { return net.Listen("unix", path) }
