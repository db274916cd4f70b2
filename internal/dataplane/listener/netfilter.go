package listener

import (
	"context"
	"io"
	"net"
	"sync"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
)

// NetworkFilter sees the bytes of the connections a chain's TCP proxy
// forwards (Proxy-Wasm network filters, through the extension package). It
// is built once per config version and shared by the chain's connections;
// a chain without one pays nothing (the proxy copies as before).
type NetworkFilter interface {
	// NewConn starts the filter's state for a connection, before the
	// upstream is dialled, on the connection's goroutine. A nil ConnFilter
	// with a nil error lets the connection through unfiltered; an error
	// closes it.
	NewConn(ctx context.Context, c net.Conn, d *filter.Downstream) (ConnFilter, error)
}

// ConnFilter is one connection's filter state. Data is called from the
// goroutine of the direction it filters, so calls for the two directions
// may overlap: implementations serialise as they need.
type ConnFilter interface {
	// Data shows bytes read from one side (fromDownstream: read from the
	// client, going upstream) and returns the bytes to write to the other
	// side: b itself, a replacement, or nothing (held back). eos says the
	// side has ended (b may then be empty). An error closes the
	// connection, both ways.
	Data(b []byte, fromDownstream, eos bool) ([]byte, error)
	// Close ends the state, once, after both directions have ended.
	Close()
}

// UpstreamObserver is implemented by ConnFilters that want to know the
// upstream once it is connected (Proxy-Wasm's upstream.address and
// cluster_metadata properties). It is called once, on the connection's
// goroutine, before the first Data.
type UpstreamObserver interface {
	Upstream(cluster string, addr net.Addr)
}

// pipeFiltered is pipe with a ConnFilter between the two sides. A filter
// error closes both connections, which ends the other direction too.
func pipeFiltered(down, up net.Conn, idle time.Duration, f ConnFilter) (sent, recv int64, err error) {
	var wg sync.WaitGroup
	var upErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		recv, upErr = copyFiltered(down, up, idle, f, false)
		if upErr != nil {
			_ = down.Close()
			_ = up.Close()
			return
		}
		closeWrite(down)
	}()
	sent, err = copyFiltered(up, down, idle, f, true)
	if err != nil {
		_ = down.Close()
		_ = up.Close()
	} else {
		closeWrite(up)
	}
	wg.Wait()
	if err == nil {
		err = upErr
	}
	return sent, recv, err
}

// copyFiltered is copyIdle through f; n counts the bytes written.
func copyFiltered(dst, src net.Conn, idle time.Duration, f ConnFilter, fromDownstream bool) (int64, error) {
	bp := pipeBufPool.Get().(*[]byte)
	defer pipeBufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		_ = src.SetReadDeadline(time.Now().Add(idle))
		m, rerr := src.Read(buf)
		eos := rerr != nil
		if m > 0 || eos {
			out, ferr := f.Data(buf[:m], fromDownstream, eos)
			if ferr != nil {
				return n, ferr
			}
			if len(out) > 0 {
				_ = dst.SetWriteDeadline(time.Now().Add(idle))
				if _, werr := dst.Write(out); werr != nil {
					return n, werr
				}
				n += int64(len(out))
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return n, nil
			}
			_ = dst.SetReadDeadline(time.Now())
			return n, rerr
		}
	}
}
