// Package h1resp reads HTTP/1.1 responses for the benchmark's load clients
// (rateload, mtlsload). It is hand-written rather than net/http because the
// clients must reuse one buffered reader per connection with no allocation
// per response, and must refuse framing a proxy should not produce.
package h1resp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// ErrMalformed marks a response that breaks HTTP/1.1 framing.
var ErrMalformed = errors.New("malformed response")

// MaxHeaderLines bounds a response head together with the reader's buffer
// size, which bounds each line.
const MaxHeaderLines = 100

// Read reads one HTTP/1.x response and discards its body; head says the
// request was a HEAD, whose response has no body whatever its headers say.
// keepAlive is false when the connection must not be reused. Interim (1xx)
// responses are skipped.
func Read(br *bufio.Reader, head bool) (status int, keepAlive bool, err error) {
	for {
		status, keepAlive, framing, length, err := ReadHead(br)
		if err != nil {
			return 0, false, err
		}
		if status >= 100 && status < 200 {
			if status == 101 {
				return 0, false, fmt.Errorf("status 101: protocol switch not supported: %w", ErrMalformed)
			}
			continue
		}
		if head || status == 204 || status == 304 {
			return status, keepAlive, nil
		}
		switch framing {
		case FramingLength:
			if _, err := br.Discard(int(length)); err != nil {
				return 0, false, fmt.Errorf("body: %w", Unexpected(err))
			}
		case FramingChunked:
			if err := discardChunked(br); err != nil {
				return 0, false, fmt.Errorf("chunked body: %w", err)
			}
		case FramingClose:
			if _, err := io.Copy(io.Discard, br); err != nil {
				return 0, false, fmt.Errorf("body until close: %w", err)
			}
			keepAlive = false
		}
		return status, keepAlive, nil
	}
}

// Framing is how a response's body ends.
type Framing int

const (
	// FramingClose: the body runs until the connection closes.
	FramingClose Framing = iota
	// FramingLength: Content-Length bytes.
	FramingLength
	// FramingChunked: chunked transfer coding.
	FramingChunked
)

// ReadHead reads a response's status line and headers, up to the blank
// line, and says how its body is framed.
func ReadHead(br *bufio.Reader) (status int, keepAlive bool, f Framing, length int64, err error) {
	line, err := readLine(br)
	if err != nil {
		return 0, false, 0, 0, fmt.Errorf("status line: %w", err)
	}
	version, rest, _ := bytes.Cut(line, []byte{' '})
	switch string(version) {
	case "HTTP/1.1":
		keepAlive = true
	case "HTTP/1.0":
	default:
		return 0, false, 0, 0, fmt.Errorf("status line %q: %w", line, ErrMalformed)
	}
	code, _, _ := bytes.Cut(rest, []byte{' '})
	if len(code) != 3 || code[0] < '1' || code[0] > '5' || !isDigits(code) {
		return 0, false, 0, 0, fmt.Errorf("status line %q: %w", line, ErrMalformed)
	}
	status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')

	length = -1
	for n := 0; ; n++ {
		if n == MaxHeaderLines {
			return 0, false, 0, 0, fmt.Errorf("more than %d header lines: %w", MaxHeaderLines, ErrMalformed)
		}
		line, err := readLine(br)
		if err != nil {
			return 0, false, 0, 0, fmt.Errorf("header block: %w", Unexpected(err))
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok || len(name) == 0 {
			return 0, false, 0, 0, fmt.Errorf("header line %q: %w", line, ErrMalformed)
		}
		value = bytes.Trim(value, " \t")
		switch {
		case bytes.EqualFold(name, []byte("content-length")):
			if !isDigits(value) || len(value) > 12 {
				return 0, false, 0, 0, fmt.Errorf("content-length %q: %w", value, ErrMalformed)
			}
			var cl int64
			for _, c := range value {
				cl = cl*10 + int64(c-'0')
			}
			if length >= 0 && cl != length {
				return 0, false, 0, 0, fmt.Errorf("conflicting content-length %q: %w", value, ErrMalformed)
			}
			length = cl
		case bytes.EqualFold(name, []byte("transfer-encoding")):
			f = FramingChunked
		case bytes.EqualFold(name, []byte("connection")):
			for tok := range bytes.SplitSeq(value, []byte{','}) {
				tok = bytes.Trim(tok, " \t")
				switch {
				case bytes.EqualFold(tok, []byte("close")):
					keepAlive = false
				case bytes.EqualFold(tok, []byte("keep-alive")):
					keepAlive = true
				}
			}
		}
	}
	// RFC 9112 section 6.3: transfer-encoding overrides content-length.
	if f != FramingChunked && length >= 0 {
		f = FramingLength
	}
	return status, keepAlive, f, length, nil
}

func discardChunked(br *bufio.Reader) error {
	for {
		line, err := readLine(br)
		if err != nil {
			return Unexpected(err)
		}
		size, _, _ := bytes.Cut(line, []byte{';'})
		size = bytes.Trim(size, " \t")
		if len(size) == 0 || len(size) > 15 {
			return fmt.Errorf("chunk size %q: %w", line, ErrMalformed)
		}
		var n int64
		for _, c := range size {
			d, ok := hexDigit(c)
			if !ok {
				return fmt.Errorf("chunk size %q: %w", line, ErrMalformed)
			}
			n = n<<4 | int64(d)
		}
		if n == 0 {
			break
		}
		if _, err := br.Discard(int(n)); err != nil {
			return Unexpected(err)
		}
		if line, err := readLine(br); err != nil {
			return Unexpected(err)
		} else if len(line) != 0 {
			return fmt.Errorf("data after chunk: %w", ErrMalformed)
		}
	}
	// Trailer section, ended by an empty line.
	for n := 0; ; n++ {
		if n == MaxHeaderLines {
			return fmt.Errorf("more than %d trailer lines: %w", MaxHeaderLines, ErrMalformed)
		}
		line, err := readLine(br)
		if err != nil {
			return Unexpected(err)
		}
		if len(line) == 0 {
			return nil
		}
	}
}

// readLine returns one line without its CRLF (or bare LF), valid until the
// next read from br.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("line longer than %d bytes: %w", br.Size(), ErrMalformed)
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// Unexpected turns a clean EOF in the middle of a response into
// io.ErrUnexpectedEOF.
func Unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func isDigits(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
