package httpconn

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/dataplane/upstream"
)

// h2Server adapts x/net/http2's server to the filter chain. HTTP/2 framing,
// flow control, HPACK and the RFC 9113 error handling come from x/net/http2;
// each stream becomes one filter.Stream.
type h2Server struct {
	srv  *Server
	h2   *http2.Server
	base *http.Server // carries x/net/http2's graceful-shutdown registry
	pool sync.Pool
}

type h2Stream struct {
	req    message.Request
	stream filter.Stream
	body   h2Body
}

func newH2Server(s *Server) *h2Server {
	h := &h2Server{
		srv: s,
		h2: &http2.Server{
			MaxConcurrentStreams: 1000,
			IdleTimeout:          5 * time.Minute,
			// Advertise the RFC 9113 default frame size rather than
			// x/net's 1 MiB: a larger frame is then the FRAME_SIZE_ERROR
			// peers and h2spec expect, and no peer can make one read of
			// ours buffer a megabyte.
			MaxReadFrameSize: 16 << 10,
		},
		base: &http.Server{MaxHeaderBytes: 64 << 10},
		pool: sync.Pool{New: func() any { return new(h2Stream) }},
	}
	if err := http2.ConfigureServer(h.base, h.h2); err != nil {
		panic(err) // only fails on a TLS config we never set
	}
	return h
}

func (h *h2Server) drain() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Shutdown only needs to run the registered GOAWAY hooks
	_ = h.base.Shutdown(ctx)
}

type connInfoKey struct{}

func (h *h2Server) serve(ctx context.Context, c net.Conn, info ConnInfo) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.serveHTTP(w, r, &info) })
	h.h2.ServeConn(c, &http2.ServeConnOpts{Context: ctx, BaseConfig: h.base, Handler: handler})
	_ = c.Close()
}

func (h *h2Server) serveHTTP(w http.ResponseWriter, r *http.Request, info *ConnInfo) {
	cfg := h.srv.cfg()
	if cfg == nil {
		http.Error(w, "listener closed", http.StatusServiceUnavailable)
		return
	}
	hs := h.pool.Get().(*h2Stream)
	defer func() {
		hs.req.Reset()
		hs.stream.Reset()
		h.pool.Put(hs)
	}()
	req := &hs.req
	req.Reset()
	req.SetMethod(r.Method)
	if r.TLS != nil {
		req.SetScheme("https")
	} else {
		req.SetScheme("http")
	}
	req.SetAuthority(r.Host)
	req.SetPath(r.URL.RequestURI())
	req.ProtoMajor, req.ProtoMinor = 2, 0
	for k, vs := range r.Header {
		lk := strings.ToLower(k)
		if isHopByHop(lk) {
			continue
		}
		for _, v := range vs {
			req.Header.Add(lk, v)
		}
	}
	// x/net/http2 moves the "trailer" declaration out of the header into
	// r.Trailer's keys. Put it back: an HTTP/2 upstream (x/net/http2 on both
	// ends) drops trailers that were not declared.
	for k := range r.Trailer {
		req.Header.Add("trailer", strings.ToLower(k))
	}
	req.ContentLength = r.ContentLength
	hs.body = h2Body{}
	if r.Body != nil && r.Body != http.NoBody {
		hs.body = h2Body{r: r, trailer: &req.Trailer}
		req.Body = &hs.body
		if r.ContentLength == 0 {
			req.ContentLength = -1 // HTTP/2 without content-length: unknown
		}
	}
	st := &hs.stream
	st.Reset()
	prepare(st, cfg, req, r.Context(), info)
	cfg.Chain.Run(st)
	resp := st.Resp
	writeH2Response(w, st, resp)
	if resp.Close != nil {
		resp.Close()
	}
	st.BytesRecv = hs.body.n
	cfg.Chain.Complete(st)
	if cfg.Observe != nil {
		cfg.Observe(st, resp.Status, time.Since(st.Start))
	}
	if cfg.AccessLog != nil {
		logAccess(cfg.AccessLog, st, resp.Status)
	}
}

func writeH2Response(w http.ResponseWriter, st *filter.Stream, resp *message.Response) {
	hdr := w.Header()
	for i := 0; i < resp.Header.Len(); i++ {
		f := resp.Header.At(i)
		k := string(f.Name)
		if isHopByHop(k) {
			continue
		}
		hdr[k] = append(hdr[k], string(f.Value))
	}
	if resp.ContentLength >= 0 && resp.Body != nil && hdr.Get("content-length") == "" {
		// x/net/http2 derives content-length itself from small writes; set it
		// explicitly so large bodies are not sent without one.
		hdr["content-length"] = []string{itoa(resp.ContentLength)}
	}
	status := resp.Status
	if status < 100 || status > 999 {
		status = 502
	}
	w.WriteHeader(status)
	if resp.Body != nil {
		flusher, _ := w.(http.Flusher)
		bp := bufPool.Get().(*[]byte)
		buf := *bp
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					break
				}
				st.BytesSent += int64(n)
				if flusher != nil {
					flusher.Flush()
				}
			}
			if err != nil {
				break
			}
		}
		bufPool.Put(bp)
	}
	for i := 0; i < resp.Trailer.Len(); i++ {
		f := resp.Trailer.At(i)
		hdr[http.TrailerPrefix+string(f.Name)] = append(hdr[http.TrailerPrefix+string(f.Name)], string(f.Value))
	}
}

func itoa(n int64) string {
	var b [20]byte
	i := len(b)
	if n == 0 {
		return "0"
	}
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// h2Body reads an HTTP/2 request body; at EOF it copies the request trailers.
type h2Body struct {
	r       *http.Request
	trailer *message.Headers
	done    bool
	n       int64 // bytes read: the access log's bytes_received
}

func (b *h2Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.r.Body.Read(p)
	b.n += int64(n)
	if err == io.EOF {
		b.done = true
		for k, vs := range b.r.Trailer {
			lk := strings.ToLower(k)
			for _, v := range vs {
				b.trailer.Add(lk, v)
			}
		}
	}
	return n, err
}

// Abort implements upstream.Aborter: closing the stream's body makes a
// pending Read return at once (the exchange is over when it is called).
func (b *h2Body) Abort() { _ = b.r.Body.Close() }

var _ upstream.Aborter = (*h2Body)(nil)

func isHopByHop(name string) bool {
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "http2-settings":
		return true
	}
	return false
}
