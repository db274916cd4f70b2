package httpconn

import (
	"context"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/h2"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// h2Handler serves HTTP/2 connections with package h2's server: each
// stream's message.Request goes into a filter.Stream as is, and the response
// is written back through the h2 stream.
type h2Handler struct {
	srv  *Server
	h2   h2.Server
	pool sync.Pool // *filter.Stream
}

func newH2Handler(s *Server) *h2Handler {
	return &h2Handler{
		srv:  s,
		h2:   h2.Server{MaxConcurrentStreams: 1000, MaxHeaderListSize: 64 << 10, IdleTimeout: 5 * time.Minute},
		pool: sync.Pool{New: func() any { return new(filter.Stream) }},
	}
}

func (h *h2Handler) drain() { h.h2.Drain() }

func (h *h2Handler) serve(ctx context.Context, c net.Conn, d *filter.Downstream) {
	scheme := "http"
	if d.TLS != nil {
		scheme = "https"
	}
	h.h2.ServeConn(ctx, c, func(st *h2.Stream) { h.handle(st, d, scheme) })
	_ = c.Close()
}

func (h *h2Handler) handle(hs *h2.Stream, d *filter.Downstream, scheme string) {
	cfg := h.srv.config()
	if cfg == nil {
		var r message.Response
		r.Status = 503
		_ = hs.WriteHeaders(&r, true)
		return
	}
	req := hs.Request()
	// The connection, not the client, says whether it is TLS.
	req.SetScheme(scheme)
	st := h.pool.Get().(*filter.Stream)
	st.Reset()
	if prepare(st, req, hs.Context(), d, cfg) {
		cfg.Chain.Run(st)
	}
	resp := st.Resp
	writeH2Stream(hs, st, resp, string(req.Method) == "HEAD")
	if resp.Close != nil {
		resp.Close()
	}
	cfg.Chain.Complete(st)
	if cfg.Observe != nil {
		cfg.Observe(st, resp.Status, time.Since(st.Start))
	}
	if len(cfg.AccessLogs) > 0 {
		logAccess(cfg.AccessLogs, st, resp.Status)
	}
	endTrace(st, resp.Status) // telemetry: span and OTLP access record
	st.Reset()
	h.pool.Put(st)
}

// writeH2Stream writes the head, then the body as it is read (each read
// is sent at once, so streaming responses such as gRPC server streams flow),
// then the trailers. A body that fails midway resets the stream rather than
// ending it as if it were complete.
func writeH2Stream(hs *h2.Stream, st *filter.Stream, resp *message.Response, head bool) {
	if resp.Status < 100 || resp.Status > 999 {
		resp.Status = 502
	}
	body := resp.Body
	if head || resp.Status == 204 || resp.Status == 304 {
		body = nil
	}
	if resp.Body == nil && !head {
		// A HEAD response passes on the length the GET would have had.
		resp.ContentLength = 0
	}
	if body == nil {
		if resp.Trailer.Len() > 0 {
			if hs.WriteHeaders(resp, false) == nil {
				_ = hs.WriteTrailers(&resp.Trailer)
			}
			return
		}
		_ = hs.WriteHeaders(resp, true)
		return
	}
	if hs.WriteHeaders(resp, false) != nil {
		return
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, err := body.Read(buf)
		// Trailer is complete once the body reports EOF.
		end := err == io.EOF && resp.Trailer.Len() == 0
		if n > 0 || end {
			if hs.WriteData(buf[:n], end) != nil {
				return
			}
			st.BytesSent += int64(n)
		}
		if err == io.EOF {
			if !end {
				_ = hs.WriteTrailers(&resp.Trailer)
			}
			return
		}
		if err != nil {
			hs.Reset(http2.ErrCodeInternal)
			return
		}
	}
}
