package h2

import (
	"net"
	"runtime"
)

// yieldReader lets every runnable goroutine run before a connection's
// reader goes back to the socket: the streams it just woke write their
// frames (and the writer flushes them) first, and by then more input has
// usually arrived, so each read(2) returns more frames and fewer reads end
// in EAGAIN. On h2load through the proxy this cut read syscalls per request
// from ~1.5 to ~1.3 and writes from ~0.85 to ~0.78; on an idle process the
// yield returns at once.
type yieldReader struct{ nc net.Conn }

func (r yieldReader) Read(p []byte) (int, error) {
	runtime.Gosched()
	return r.nc.Read(p)
}
