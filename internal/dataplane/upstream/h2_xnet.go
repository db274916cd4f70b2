package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// H2Options configures the HTTP/2 transport.
type H2Options struct {
	Dial Dialer
	// TLS selects h2 over TLS (ALPN h2); nil means h2c with prior knowledge.
	TLS *tls.Config
}

// H2 multiplexes requests over HTTP/2 connections, one pool per endpoint
// address, on x/net/http2's client connection pool.
type H2 struct {
	t      *http2.Transport
	scheme string
}

var _ Transport = (*H2)(nil)

// NewH2 returns an HTTP/2 transport (h2c when opt.TLS is nil).
func NewH2(opt H2Options) *H2 {
	dial := opt.Dial
	if dial == nil {
		dial = NewDialer(0)
	}
	t := &http2.Transport{
		DisableCompression:         true,
		StrictMaxConcurrentStreams: false,
	}
	h := &H2{t: t, scheme: "http"}
	if opt.TLS == nil {
		t.AllowHTTP = true
		t.DialTLSContext = func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return dial(ctx, addr)
		}
	} else {
		cfg := opt.TLS.Clone()
		cfg.NextProtos = []string{"h2"}
		h.scheme = "https"
		t.TLSClientConfig = cfg
		t.DialTLSContext = func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
			nc, err := dial(ctx, addr)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(nc, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				nc.Close()
				return nil, fmt.Errorf("%w: %s: tls: %w", ErrConnect, addr, err)
			}
			return tc, nil
		}
	}
	return h
}

// CloseIdle implements Transport.
func (h *H2) CloseIdle() { h.t.CloseIdleConnections() }

// RoundTrip implements Transport.
func (h *H2) RoundTrip(ctx context.Context, ep *endpoint.Endpoint, req *message.Request, resp *message.Response, dl Deadlines) error {
	cancel := context.CancelFunc(func() {})
	if !dl.Total.IsZero() {
		ctx, cancel = context.WithDeadline(ctx, dl.Total)
	}
	var headTimer *time.Timer
	if !dl.Head.IsZero() && dl.Head != dl.Total {
		// The per-try bound covers the head only: cancel the stream if the
		// head is late, and disarm once it arrived.
		var headCancel context.CancelFunc
		ctx, headCancel = context.WithCancel(ctx)
		outer := cancel
		cancel = func() { headCancel(); outer() }
		headTimer = time.AfterFunc(time.Until(dl.Head), headCancel)
	}
	hr := &http.Request{
		Method:     string(req.Method),
		URL:        &url.URL{Scheme: h.scheme, Host: ep.Address, Opaque: string(req.Path)},
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     make(http.Header, req.Header.Len()),
		Host:       string(req.Authority),
	}
	var reqBody *h2ReqBody
	if req.Body != nil && req.ContentLength != 0 {
		reqBody = &h2ReqBody{r: req.Body, trailer: &req.Trailer, hr: hr}
		hr.Body = reqBody
		hr.ContentLength = req.ContentLength
	}
	for i := 0; i < req.Header.Len(); i++ {
		f := req.Header.At(i)
		k := string(f.Name)
		hr.Header[k] = append(hr.Header[k], string(f.Value))
	}
	if hr.Body != nil && hr.Header.Get("te") == "" {
		// Declare trailers so x/net/http2 sends any the body reader reports.
		hr.Trailer = http.Header{}
	}
	hr = hr.WithContext(ctx)
	hres, err := h.t.RoundTrip(hr)
	if headTimer != nil && !headTimer.Stop() && err != nil {
		cancel()
		reqBody.detach()
		return fmt.Errorf("%w: response head: %v", ErrTimeout, err)
	}
	if err != nil {
		cancel()
		reqBody.detach()
		if rerr := reqBody.readErr(); rerr != nil {
			return fmt.Errorf("%w: %w", ErrRequestBody, rerr)
		}
		if ctx.Err() == context.DeadlineExceeded {
			return fmt.Errorf("%w: %v", ErrTimeout, err)
		}
		return classifyH2(err)
	}
	resp.Status = hres.StatusCode
	for k, vs := range hres.Header {
		lk := strings.ToLower(k)
		for _, v := range vs {
			resp.Header.Add(lk, v)
		}
	}
	resp.ContentLength = hres.ContentLength
	b := &h2RespBody{res: hres, trailer: &resp.Trailer, cancel: cancel, req: reqBody}
	resp.Body = b
	resp.Close = b.close
	return nil
}

func classifyH2(err error) error {
	var se http2.StreamError
	if errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	if errors.Is(err, ErrConnect) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrReset, err)
}

// h2ReqBody streams a request body and copies the downstream request's
// trailers (known only at EOF) into the outgoing request.
//
// x/net/http2 reads it on its own goroutine, which can outlive the exchange
// (a response that ends before the request, a reset, a cancel). The request
// it reads from belongs to the connection manager, which reuses it once
// resp.Close has returned; detach is the fence that makes that safe.
type h2ReqBody struct {
	r       io.Reader
	trailer *message.Headers
	hr      *http.Request

	// mu guards the fields below. It is not held across r.Read, so that
	// detach can interrupt a Read that blocks on the downstream.
	mu       sync.Mutex
	err      error // the downstream read error, if any
	detached bool
	reading  bool
	idle     chan struct{} // closed when the Read in progress at detach returns
}

// errDetached ends x/net/http2's body writer after the exchange ended.
var errDetached = errors.New("upstream: request body released: exchange ended")

func (b *h2ReqBody) readErr() error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

func (b *h2ReqBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.detached {
		b.mu.Unlock()
		return 0, errDetached
	}
	b.reading = true
	b.mu.Unlock()
	n, err := b.r.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reading = false
	if b.detached {
		if b.idle != nil {
			close(b.idle)
		}
		return 0, errDetached
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	if err == io.EOF && b.trailer.Len() > 0 && b.hr.Trailer != nil {
		for i := 0; i < b.trailer.Len(); i++ {
			f := b.trailer.At(i)
			b.hr.Trailer[string(f.Name)] = append(b.hr.Trailer[string(f.Name)], string(f.Value))
		}
	}
	return n, err
}

func (b *h2ReqBody) Close() error { return nil }

// detach ends the transport's use of the request: later Reads fail at once,
// and a Read in progress is interrupted (Aborter) and waited for. A body
// that cannot be interrupted is not waited for, since its Read may block on
// a client that waits for the response.
func (b *h2ReqBody) detach() {
	if b == nil {
		return
	}
	b.mu.Lock()
	if b.detached {
		b.mu.Unlock()
		return
	}
	b.detached = true
	if !b.reading {
		b.mu.Unlock()
		return
	}
	a, ok := b.r.(Aborter)
	if !ok {
		b.mu.Unlock()
		return
	}
	b.idle = make(chan struct{})
	idle := b.idle
	b.mu.Unlock()
	a.Abort()
	<-idle
}

type h2RespBody struct {
	res     *http.Response
	trailer *message.Headers
	done    bool
	cancel  context.CancelFunc
	req     *h2ReqBody
}

func (b *h2RespBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.res.Body.Read(p)
	if err == io.EOF {
		b.done = true
		for k, vs := range b.res.Trailer {
			lk := strings.ToLower(k)
			for _, v := range vs {
				b.trailer.Add(lk, v)
			}
		}
	} else if err != nil {
		err = classifyH2(err)
	}
	return n, err
}

func (b *h2RespBody) close() {
	_ = b.res.Body.Close()
	b.cancel()
	b.req.detach()
}
