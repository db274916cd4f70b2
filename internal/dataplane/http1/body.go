package http1

import (
	"io"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// BodyReader returns the reader of the body that f describes, reading
// through r. It returns io.EOF at the end of the body (with the last bytes
// when it can), after parsing a chunked body's trailers into trailer (nil
// discards them). The returned reader is owned by r and valid until the next
// head is read; it does not allocate. A malformed chunked body fails with a
// *Error and the connection must be closed; a body cut short by the peer
// fails with io.ErrUnexpectedEOF.
func (r *Reader) BodyReader(f Framing, trailer *message.Headers) io.Reader {
	switch {
	case f.NoBody || (!f.Chunked && f.ContentLength == 0):
		r.length.n = 0
		return &r.length
	case f.Chunked:
		r.chunked.reset(trailer)
		r.inBody = true
		return &r.chunked
	case f.ContentLength > 0:
		r.length.n = f.ContentLength
		r.inBody = true
		return &r.length
	default:
		r.inBody = true
		return &r.untilClose
	}
}

// lengthReader reads a Content-Length delimited body.
type lengthReader struct {
	r *Reader
	n int64 // bytes left
}

func (l *lengthReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		l.r.inBody = false
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.readBody(p)
	l.n -= int64(n)
	if l.n == 0 {
		l.r.inBody = false
		return n, io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// closeReader reads a response body delimited by the end of the stream.
type closeReader struct{ r *Reader }

func (c *closeReader) Read(p []byte) (int, error) {
	n, err := c.r.readBody(p)
	if err == io.EOF {
		c.r.inBody = false
	}
	return n, err
}

type chunkState uint8

const (
	chunkSize    chunkState = iota // expecting a chunk-size line
	chunkData                      // inside chunk data
	chunkDataEnd                   // expecting the CRLF after chunk data
	chunkDone
)

// chunkedReader decodes the chunked transfer coding (RFC 9112 7.1).
type chunkedReader struct {
	r       *Reader
	trailer *message.Headers
	state   chunkState
	left    int64 // bytes left in the current chunk
	excess  int64 // chunk-line overhead beyond what the data justifies
	err     error
}

func (c *chunkedReader) reset(trailer *message.Headers) {
	*c = chunkedReader{r: c.r, trailer: trailer}
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	for {
		switch c.state {
		case chunkDone:
			return 0, io.EOF
		case chunkSize:
			if err := c.readSize(); err != nil {
				return 0, c.fail(err)
			}
		case chunkDataEnd:
			b, err := c.r.Peek(2)
			if err != nil {
				return 0, c.fail(err)
			}
			if b[0] != '\r' || b[1] != '\n' {
				return 0, c.fail(c.r.fail(400, "missing CRLF after chunk data"))
			}
			c.r.r += 2
			c.state = chunkSize
		case chunkData:
			if len(p) == 0 {
				return 0, nil
			}
			if int64(len(p)) > c.left {
				p = p[:c.left]
			}
			n, err := c.r.readBody(p)
			c.left -= int64(n)
			if c.left == 0 {
				c.state = chunkDataEnd
			}
			if err != nil {
				return n, c.fail(err)
			}
			return n, nil
		}
	}
}

// fail records a sticky error; the end of the stream inside a body is
// unexpected.
func (c *chunkedReader) fail(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	c.err = err
	return err
}

// readSize parses "chunk-size [BWS ; chunk-ext] CRLF" and, for the last
// chunk, the trailer section.
func (c *chunkedReader) readSize() error {
	r := c.r
	line, err := r.readLine(maxChunkLine, 400, "chunk line too long")
	if err != nil {
		return err
	}
	i := 0
	var size int64
	for i < len(line) && charClass[line[i]]&clsHex != 0 {
		if size>>59 != 0 {
			return r.fail(400, "chunk size overflow")
		}
		size = size<<4 | int64(unhex(line[i]))
		i++
	}
	if i == 0 {
		return r.fail(400, "invalid chunk size")
	}
	rest := line[i:]
	j := 0
	for j < len(rest) && (rest[j] == ' ' || rest[j] == '\t') {
		j++
	}
	if j < len(rest) {
		if rest[j] != ';' {
			return r.fail(400, "invalid chunk size")
		}
		for _, b := range rest[j:] {
			if charClass[b]&clsValue == 0 {
				return r.fail(400, "invalid byte in chunk extension")
			}
		}
	} else if j > 0 {
		return r.fail(400, "invalid chunk size")
	}
	// As net/http does: a peer sending many tiny chunks with long extensions
	// makes the proxy work for nothing; allow 16 bytes of overhead per chunk
	// plus data, and 16 KiB of slack.
	c.excess += int64(len(line)) + 2 - 16 - 2*size
	if c.excess < 0 {
		c.excess = 0
	}
	if c.excess > 16<<10 {
		return r.fail(400, "too much chunk overhead")
	}
	if size > 0 {
		c.left = size
		c.state = chunkData
		return nil
	}
	return c.readTrailers()
}

func (c *chunkedReader) readTrailers() error {
	r := c.r
	h := c.trailer
	if h == nil {
		r.scratch.Reset()
		h = &r.scratch
	}
	r.st = headState{}
	r.connVals = r.connVals[:0]
	if err := r.readFields(h, modeTrailer); err != nil {
		return err
	}
	c.state = chunkDone
	r.inBody = false
	return nil
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
