package http1

import (
	"bytes"
	"errors"
	"io"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// ErrBufferFull is returned by Peek when more bytes are asked for than the
// buffer holds.
var ErrBufferFull = errors.New("http1: peek larger than the read buffer")

// ErrBodyUnread is returned by ReadRequest and ReadResponse when the body of
// the previous message was not read to its end: parsing on would take body
// bytes for a message head. The caller closes the connection (or drains the
// body first).
var ErrBodyUnread = errors.New("http1: previous message body not read to the end")

const (
	minBufferSize = 4096
	// maxChunkLine bounds a chunk-size line with its extensions.
	maxChunkLine = 4096
	// maxInterim bounds the 1xx responses skipped before a final one.
	maxInterim = 16
	// maxEmptyReads bounds consecutive (0, nil) reads from the source.
	maxEmptyReads = 100
)

// Reader is a connection's buffered reader. It parses message heads, serves
// bodies and, after an Upgrade or CONNECT, raw bytes. One Reader serves every
// message of a connection and can be pooled across connections (Reset). It
// is not safe for concurrent use.
//
// The buffer has a fixed size chosen at NewReader; it grows only to fit a
// single head line longer than the buffer, and never beyond the limits, so a
// pooled Reader's memory stays bounded by MaxHeaderBytes.
type Reader struct {
	src  io.Reader
	buf  []byte
	r, w int
	err  error // sticky error of src

	lim    Limits // of the last head, applied to trailers
	resp   bool   // the current message is a response: errors answer 502
	inBody bool   // a body is framed and not yet read to its end

	length     lengthReader
	chunked    chunkedReader
	untilClose closeReader

	st       headState
	connVals [][]byte        // Connection tokens naming fields to remove
	tmp      []byte          // scratch for building a path
	scratch  message.Headers // interim responses and discarded trailers
}

// NewReader returns a Reader over r with a buffer of size bytes (at least
// 4096). A head line longer than the buffer grows it up to the limits; size
// it at MaxRequestLine or more to avoid that.
func NewReader(r io.Reader, size int) *Reader {
	if size < minBufferSize {
		size = minBufferSize
	}
	rd := &Reader{src: r, buf: make([]byte, size), lim: DefaultLimits()}
	rd.length.r = rd
	rd.chunked.r = rd
	rd.untilClose.r = rd
	return rd
}

// Reset discards all state and buffered bytes and reads from src, so that a
// pooled Reader can serve a new connection.
func (r *Reader) Reset(src io.Reader) {
	r.src = src
	r.r, r.w = 0, 0
	r.err = nil
	r.inBody = false
	r.resp = false
	r.lim = DefaultLimits()
	r.chunked.trailer = nil
	r.connVals = r.connVals[:0]
	r.scratch.Reset()
}

// Buffered returns how many bytes are read ahead: a pipelined next message or
// the first bytes of an upgraded stream.
func (r *Reader) Buffered() int { return r.w - r.r }

// Peek returns the next n bytes without consuming them, reading as needed.
// The slice is valid until the next read. With fewer than n bytes available
// it returns them with the read error (ErrBufferFull when n exceeds the
// buffer).
func (r *Reader) Peek(n int) ([]byte, error) {
	if n > len(r.buf) {
		return r.buf[r.r:r.w], ErrBufferFull
	}
	for r.w-r.r < n {
		if r.err != nil {
			return r.buf[r.r:r.w], r.err
		}
		r.fill()
	}
	return r.buf[r.r : r.r+n], nil
}

// Read reads raw bytes through the buffer: what is buffered first, then the
// source. It is for the byte stream after an Upgrade or CONNECT; message
// bodies are read with BodyReader.
func (r *Reader) Read(p []byte) (int, error) {
	return r.readBody(p)
}

// readBody returns buffered bytes, else reads once from the source; reads
// at least as large as the buffer go straight into p.
func (r *Reader) readBody(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if r.r < r.w {
		n := copy(p, r.buf[r.r:r.w])
		r.r += n
		return n, nil
	}
	if r.err != nil {
		return 0, r.err
	}
	if len(p) >= len(r.buf) {
		n, err := r.readSrc(p)
		if err != nil {
			r.err = err
		}
		return n, err
	}
	r.r, r.w = 0, 0
	r.fill()
	if r.w == 0 {
		return 0, r.err
	}
	n := copy(p, r.buf[:r.w])
	r.r = n
	return n, nil
}

// fill compacts the buffer and reads once into its free space, recording a
// read error as sticky.
func (r *Reader) fill() {
	if r.r > 0 {
		copy(r.buf, r.buf[r.r:r.w])
		r.w -= r.r
		r.r = 0
	}
	if r.w == len(r.buf) {
		return
	}
	n, err := r.readSrc(r.buf[r.w:])
	r.w += n
	if err != nil {
		r.err = err
	}
}

func (r *Reader) readSrc(p []byte) (int, error) {
	if r.src == nil {
		return 0, io.EOF
	}
	for i := 0; i < maxEmptyReads; i++ {
		n, err := r.src.Read(p)
		if n > 0 || err != nil {
			return n, err
		}
	}
	return 0, io.ErrNoProgress
}

// readLine returns the next CRLF-terminated line without its CRLF. The slice
// points into the buffer and is valid until the next read. A line longer
// than max fails with status tooLong; the buffer grows to fit a line of up to max
// bytes. A clean end of stream before any byte of the line returns io.EOF, in
// the middle of it io.ErrUnexpectedEOF. A LF not preceded by CR is an error.
func (r *Reader) readLine(max, tooLong int, reason string) ([]byte, error) {
	scanned := 0
	for {
		if i := bytes.IndexByte(r.buf[r.r+scanned:r.w], '\n'); i >= 0 {
			end := r.r + scanned + i
			line := r.buf[r.r:end]
			if len(line) == 0 || line[len(line)-1] != '\r' {
				return nil, r.fail(400, "bare LF in message head")
			}
			line = line[:len(line)-1]
			if len(line) > max {
				return nil, r.fail(tooLong, reason)
			}
			r.r = end + 1
			return line, nil
		}
		scanned = r.w - r.r
		if scanned > max+1 {
			return nil, r.fail(tooLong, reason)
		}
		if r.err != nil {
			if r.err == io.EOF {
				if scanned == 0 {
					return nil, io.EOF
				}
				return nil, io.ErrUnexpectedEOF
			}
			return nil, r.err
		}
		if r.r == 0 && r.w == len(r.buf) {
			r.grow(max + 2)
		}
		r.fill()
	}
}

// grow enlarges a full buffer so that a line of up to limit bytes fits. It is
// the only allocation a Reader makes after NewReader, and happens at most a
// few times per Reader since the buffer is kept.
func (r *Reader) grow(limit int) {
	n := 2 * len(r.buf)
	if n > limit {
		n = limit
	}
	if n <= len(r.buf) {
		return
	}
	nb := make([]byte, n)
	copy(nb, r.buf[r.r:r.w])
	r.w -= r.r
	r.r = 0
	r.buf = nb
}

// fail builds a protocol error. Errors while reading a response are the
// upstream's fault: the proxy answers 502 whatever the cause.
func (r *Reader) fail(status int, reason string) *Error {
	if r.resp {
		status = 502
	}
	return &Error{Status: status, Reason: reason}
}
