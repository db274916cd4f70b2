package listener

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"
)

// errHelloRead stops the throw-away handshake once the ClientHello is parsed.
var errHelloRead = errors.New("client hello read")

// peekClientHello reads the TLS ClientHello from c without consuming it: the
// returned reader replays every byte read so far. crypto/tls parses the hello
// (rather than a hand-written parser) and the handshake is abandoned from
// GetConfigForClient before anything is written.
func peekClientHello(c net.Conn, timeout time.Duration) (hello *tls.ClientHelloInfo, replay []byte, err error) {
	rec := &recordingConn{Conn: c}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	var info *tls.ClientHelloInfo
	err = tls.Server(rec, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			cp := *h
			info = &cp
			return nil, errHelloRead
		},
	}).Handshake()
	if info == nil {
		if err == nil {
			err = errors.New("no TLS client hello")
		}
		return nil, rec.buf.Bytes(), err
	}
	return info, rec.buf.Bytes(), nil
}

type recordingConn struct {
	net.Conn
	buf bytes.Buffer
}

func (r *recordingConn) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.buf.Write(p[:n])
	return n, err
}

// Write is refused: peeking must not answer the client.
func (r *recordingConn) Write(p []byte) (int, error) { return 0, io.ErrClosedPipe }

// replayConn serves prefix before reading from the connection.
type replayConn struct {
	net.Conn
	prefix []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite forwards half-close to the underlying TCP connection.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
