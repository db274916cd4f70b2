package upstream

import (
	"net"
	"os"
	"syscall"
)

// rawWriter sends a request on a plain TCP upstream connection and then
// waits, inside the same netpoller registration, until the response can be
// read.
//
// Why: through Go's net.Conn the response read that follows a request write
// is almost always a read(2) that fails with EAGAIN (the upstream has not
// answered yet), then a park on the netpoller, then the read that succeeds:
// one wasted system call per proxied request, a few percent of the proxy's
// CPU on a keep-alive benchmark where the kernel's TCP work is 80% of it.
// syscall.RawConn.Read lets us wait for readability without reading, but it
// clears the connection's recorded readiness when it starts, so waiting that
// way after an ordinary Write could miss a response that arrived between the
// two and wait for ever. Writing from inside the RawConn.Read callback puts
// the write after that reset: every byte of the response arrives after it
// and wakes the wait.
//
// Only for *net.TCPConn (not TLS, not wrapped connections whose Write does
// more than write), only when the response reader holds no buffered bytes,
// and only for writes that complete in one system call; anything else falls
// back to Write. Nothing else writes an upstream HTTP/1.1 connection while
// a request is in flight, so writing under the read lock does not interleave.
type rawWriter struct {
	rc syscall.RawConn
	fn func(fd uintptr) bool // rw.callback, bound once: no allocation per request

	buf   []byte
	n     int
	err   error
	wrote bool
}

func newRawWriter(nc net.Conn) *rawWriter {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &rawWriter{rc: rc}
	w.fn = w.callback
	return w
}

func (w *rawWriter) callback(fd uintptr) bool {
	if w.wrote {
		return true // readable (or hung up): the response reader takes over
	}
	w.wrote = true
	for {
		w.n, w.err = syscall.Write(int(fd), w.buf)
		if w.err != syscall.EINTR {
			break
		}
	}
	if w.n < 0 {
		w.n = 0
	}
	if w.err == syscall.EAGAIN {
		w.err = nil // send buffer full: Write finishes the rest
	}
	return w.err != nil || w.n < len(w.buf)
}

// writeAndAwait writes b on nc and returns once nc is readable. It returns
// the error of the write only: a deadline or close while waiting shows up
// again in the read that follows.
func (w *rawWriter) writeAndAwait(nc net.Conn, b []byte) error {
	w.buf, w.n, w.err, w.wrote = b, 0, nil, false
	_ = w.rc.Read(w.fn)
	wrote, n, err := w.wrote, w.n, w.err
	w.buf = nil
	if err != nil {
		return &net.OpError{Op: "write", Net: "tcp", Source: nc.LocalAddr(), Addr: nc.RemoteAddr(), Err: os.NewSyscallError("write", err)}
	}
	if !wrote {
		// The read side failed before the callback ran (deadline passed,
		// connection closed): Write reports it the usual way.
		n = 0
	}
	if n < len(b) {
		_, err = nc.Write(b[n:])
	}
	return err
}
