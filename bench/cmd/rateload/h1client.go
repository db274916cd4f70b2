package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

var errMalformed = errors.New("malformed response")

// maxHeaderLines bounds a response head together with the reader's buffer
// size, which bounds each line.
const maxHeaderLines = 100

// readResponse reads one HTTP/1.x response and discards its body; head says
// the request was a HEAD, whose response has no body whatever its headers say. keepAlive is false when the connection must
// not be reused. Interim (1xx) responses are skipped.
func readResponse(br *bufio.Reader, head bool) (status int, keepAlive bool, err error) {
	for {
		status, keepAlive, framing, length, err := readResponseHead(br)
		if err != nil {
			return 0, false, err
		}
		if status >= 100 && status < 200 {
			if status == 101 {
				return 0, false, fmt.Errorf("status 101: protocol switch not supported: %w", errMalformed)
			}
			continue
		}
		if head || status == 204 || status == 304 {
			return status, keepAlive, nil
		}
		switch framing {
		case framingLength:
			if _, err := br.Discard(int(length)); err != nil {
				return 0, false, fmt.Errorf("body: %w", unexpected(err))
			}
		case framingChunked:
			if err := discardChunked(br); err != nil {
				return 0, false, fmt.Errorf("chunked body: %w", err)
			}
		case framingClose:
			if _, err := io.Copy(io.Discard, br); err != nil {
				return 0, false, fmt.Errorf("body until close: %w", err)
			}
			keepAlive = false
		}
		return status, keepAlive, nil
	}
}

type framing int

const (
	framingClose framing = iota
	framingLength
	framingChunked
)

func readResponseHead(br *bufio.Reader) (status int, keepAlive bool, f framing, length int64, err error) {
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
		return 0, false, 0, 0, fmt.Errorf("status line %q: %w", line, errMalformed)
	}
	code, _, _ := bytes.Cut(rest, []byte{' '})
	if len(code) != 3 || code[0] < '1' || code[0] > '5' || !isDigits(code) {
		return 0, false, 0, 0, fmt.Errorf("status line %q: %w", line, errMalformed)
	}
	status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')

	length = -1
	for n := 0; ; n++ {
		if n == maxHeaderLines {
			return 0, false, 0, 0, fmt.Errorf("more than %d header lines: %w", maxHeaderLines, errMalformed)
		}
		line, err := readLine(br)
		if err != nil {
			return 0, false, 0, 0, fmt.Errorf("header block: %w", unexpected(err))
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok || len(name) == 0 {
			return 0, false, 0, 0, fmt.Errorf("header line %q: %w", line, errMalformed)
		}
		value = bytes.Trim(value, " \t")
		switch {
		case bytes.EqualFold(name, []byte("content-length")):
			if !isDigits(value) || len(value) > 18 {
				return 0, false, 0, 0, fmt.Errorf("content-length %q: %w", value, errMalformed)
			}
			var cl int64
			for _, c := range value {
				cl = cl*10 + int64(c-'0')
			}
			if length >= 0 && cl != length {
				return 0, false, 0, 0, fmt.Errorf("conflicting content-length %q: %w", value, errMalformed)
			}
			length = cl
		case bytes.EqualFold(name, []byte("transfer-encoding")):
			f = framingChunked
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
	if f != framingChunked && length >= 0 {
		f = framingLength
	}
	return status, keepAlive, f, length, nil
}

func discardChunked(br *bufio.Reader) error {
	for {
		line, err := readLine(br)
		if err != nil {
			return unexpected(err)
		}
		size, _, _ := bytes.Cut(line, []byte{';'})
		size = bytes.Trim(size, " \t")
		if len(size) == 0 || len(size) > 15 {
			return fmt.Errorf("chunk size %q: %w", line, errMalformed)
		}
		var n int64
		for _, c := range size {
			d, ok := hexDigit(c)
			if !ok {
				return fmt.Errorf("chunk size %q: %w", line, errMalformed)
			}
			n = n<<4 | int64(d)
		}
		if n == 0 {
			break
		}
		if _, err := br.Discard(int(n)); err != nil {
			return unexpected(err)
		}
		if line, err := readLine(br); err != nil {
			return unexpected(err)
		} else if len(line) != 0 {
			return fmt.Errorf("data after chunk: %w", errMalformed)
		}
	}
	// Trailer section, ended by an empty line.
	for n := 0; ; n++ {
		if n == maxHeaderLines {
			return fmt.Errorf("more than %d trailer lines: %w", maxHeaderLines, errMalformed)
		}
		line, err := readLine(br)
		if err != nil {
			return unexpected(err)
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
			return nil, fmt.Errorf("line longer than %d bytes: %w", br.Size(), errMalformed)
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// unexpected turns a clean EOF in the middle of a response into
// io.ErrUnexpectedEOF.
func unexpected(err error) error {
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
