package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
)

// h2Preface is what an h2c client with prior knowledge sends first (RFC 9113
// section 3.4); no HTTP/1.1 request line can start with it.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// statsPath answers with the request counts by protocol, so that bench/run.sh
// can check which protocol a proxy really used upstream.
const statsPath = "/_backend/stats"

// counters counts requests served by protocol. The stats requests
// themselves are not counted.
type counters struct {
	h1, h2 atomic.Uint64
}

func (c *counters) text() string {
	return fmt.Sprintf("h1_requests=%d h2_requests=%d\n", c.h1.Load(), c.h2.Load())
}

// server answers HTTP/1.1 itself and passes h2c connections to net/http.
type server struct {
	log   *slog.Logger
	count counters
	// Canned responses, built once so that the request loop only copies bytes.
	keepAlive, closing, headKeepAlive, headClosing []byte
	h2                                             *http.Server
}

func newServer(bodySize int, log *slog.Logger) *server {
	body := bytes.Repeat([]byte{'x'}, bodySize)
	head := func(connClose bool) []byte {
		h := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(bodySize) + "\r\n"
		if connClose {
			h += "Connection: close\r\n"
		}
		return []byte(h + "\r\n")
	}
	s := &server{
		log:           log,
		headKeepAlive: head(false),
		headClosing:   head(true),
	}
	s.keepAlive = append(append([]byte(nil), s.headKeepAlive...), body...)
	s.closing = append(append([]byte(nil), s.headClosing...), body...)
	protos := new(http.Protocols)
	protos.SetUnencryptedHTTP2(true)
	s.h2 = &http.Server{
		Handler:   bodyHandler(body, &s.count),
		Protocols: protos,
		ErrorLog:  slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s
}

// Serve accepts connections until ctx is done, then closes the listener and
// every connection it accepted and returns ctx.Err() once their goroutines
// have finished.
func (s *server) Serve(ctx context.Context, ln net.Listener) error {
	h2ln := newConnListener(ln.Addr())
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		closed bool
		conns  = make(map[net.Conn]struct{})
	)
	closeAll := func() {
		ln.Close()
		h2ln.Close()
		s.h2.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}
	wg.Go(func() {
		if err := s.h2.Serve(h2ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("h2c server stopped", "err", err)
		}
	})
	stop := context.AfterFunc(ctx, closeAll)

	var acceptErr error
	for {
		c, err := ln.Accept()
		if err != nil {
			acceptErr = err
			break
		}
		mu.Lock()
		if closed {
			// Accepted while shutting down, after closeAll went over conns.
			mu.Unlock()
			c.Close()
			continue
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			s.serveConn(c, h2ln)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		})
	}
	if stop() {
		// The listener failed on its own: shut down as cancellation would.
		closeAll()
		wg.Wait()
		return fmt.Errorf("accept: %w", acceptErr)
	}
	wg.Wait()
	return ctx.Err()
}

// serveConn runs one connection. An h2c connection is handed to the HTTP/2
// server and stays open after serveConn returns, so it is only closed here on
// the HTTP/1.1 path.
func (s *server) serveConn(c net.Conn, h2ln *connListener) {
	br := bufio.NewReaderSize(c, 4096)
	if p, err := br.Peek(3); err != nil {
		c.Close()
		return
	} else if string(p) == h2Preface[:3] {
		if p, err := br.Peek(len(h2Preface)); err != nil || string(p) != h2Preface {
			c.Close()
			return
		}
		h2ln.deliver(&peekedConn{Conn: c, r: br})
		return
	}
	defer c.Close()
	bw := bufio.NewWriterSize(c, 4096)
	var req requestHead
	for {
		if err := readRequestHead(br, &req); err != nil {
			if errors.Is(err, errMalformed) || errors.Is(err, errTooLarge) {
				status := "400 Bad Request"
				if errors.Is(err, errTooLarge) {
					status = "431 Request Header Fields Too Large"
				}
				bw.WriteString("HTTP/1.1 " + status + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
				bw.Flush()
			}
			return
		}
		if req.chunked {
			bw.WriteString("HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			bw.Flush()
			return
		}
		if req.contentLength > 0 {
			if _, err := br.Discard(int(req.contentLength)); err != nil {
				return
			}
		}
		if req.stats {
			stats := s.count.text()
			fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(stats), stats)
		} else {
			s.count.h1.Add(1)
			bw.Write(s.response(&req))
		}
		// Flush only when no pipelined request is waiting, so a pipelined
		// batch goes out in one write.
		if br.Buffered() == 0 || !req.keepAlive {
			if err := bw.Flush(); err != nil {
				return
			}
		}
		if !req.keepAlive {
			return
		}
	}
}

func (s *server) response(req *requestHead) []byte {
	switch {
	case req.head && req.keepAlive:
		return s.headKeepAlive
	case req.head:
		return s.headClosing
	case req.keepAlive:
		return s.keepAlive
	default:
		return s.closing
	}
}

func bodyHandler(body []byte, count *counters) http.Handler {
	size := strconv.Itoa(len(body))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == statsPath {
			io.WriteString(w, count.text())
			return
		}
		if r.ProtoMajor == 2 {
			count.h2.Add(1)
		} else {
			count.h1.Add(1)
		}
		h := w.Header()
		h["Content-Type"] = []string{"text/plain"}
		h["Content-Length"] = []string{size}
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			w.Write(body)
		}
	})
}

// peekedConn replays the bytes read while sniffing the protocol.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// connListener feeds already-accepted connections to an http.Server.
type connListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

var _ net.Listener = (*connListener)(nil)

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) deliver(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// netHTTPServer is the cross-check: both protocols served by net/http.
type netHTTPServer struct {
	srv   *http.Server
	count counters
}

func newNetHTTPServer(bodySize int, log *slog.Logger) *netHTTPServer {
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	n := &netHTTPServer{}
	n.srv = &http.Server{
		Handler:   bodyHandler(bytes.Repeat([]byte{'x'}, bodySize), &n.count),
		Protocols: protos,
		ErrorLog:  slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return n
}

// Serve serves until ctx is done and then returns ctx.Err().
func (n *netHTTPServer) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { n.srv.Close() })
	defer stop()
	err := n.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
