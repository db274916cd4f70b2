package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

var (
	errMalformed = errors.New("malformed request")
	errTooLarge  = errors.New("request head too large")
)

// maxHeaderLines bounds a request head together with the reader's buffer
// size, which bounds each line.
const maxHeaderLines = 100

// requestHead is what the backend needs from a request: how to frame the
// body and whether the connection stays open. It is reused across requests.
type requestHead struct {
	contentLength int64
	chunked       bool
	keepAlive     bool
	head          bool
	stats         bool // target is statsPath
}

// readRequestHead reads one request line and header block from br into req.
// It returns io.EOF when the peer closed the connection between requests,
// and an error wrapping errMalformed or errTooLarge for input it rejects.
func readRequestHead(br *bufio.Reader, req *requestHead) error {
	*req = requestHead{contentLength: -1}
	line, err := readLine(br)
	// RFC 9112 section 2.2: ignore an empty line before the request line.
	if err == nil && len(line) == 0 {
		line, err = readLine(br)
	}
	if err != nil {
		return err
	}
	method, rest, ok1 := bytes.Cut(line, []byte{' '})
	target, version, ok2 := bytes.Cut(rest, []byte{' '})
	if !ok1 || !ok2 || !isToken(method) || len(target) == 0 || bytes.IndexByte(target, ' ') >= 0 {
		return fmt.Errorf("request line %q: %w", line, errMalformed)
	}
	switch string(version) {
	case "HTTP/1.1":
		req.keepAlive = true
	case "HTTP/1.0":
	default:
		return fmt.Errorf("version %q: %w", version, errMalformed)
	}
	req.head = string(method) == "HEAD"
	req.stats = string(target) == statsPath

	for n := 0; ; n++ {
		if n == maxHeaderLines {
			return fmt.Errorf("more than %d header lines: %w", maxHeaderLines, errTooLarge)
		}
		line, err := readLine(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("header block: %w", io.ErrUnexpectedEOF)
			}
			return err
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok || !isToken(name) {
			return fmt.Errorf("header line %q: %w", line, errMalformed)
		}
		value = bytes.Trim(value, " \t")
		switch {
		case bytes.EqualFold(name, []byte("content-length")):
			cl, ok := parseContentLength(value)
			if !ok || (req.contentLength >= 0 && cl != req.contentLength) {
				return fmt.Errorf("content-length %q: %w", value, errMalformed)
			}
			req.contentLength = cl
		case bytes.EqualFold(name, []byte("transfer-encoding")):
			// Any transfer coding frames the body in a way this server does
			// not decode; the caller answers 501.
			req.chunked = true
		case bytes.EqualFold(name, []byte("connection")):
			for tok := range bytes.SplitSeq(value, []byte{','}) {
				tok = bytes.Trim(tok, " \t")
				switch {
				case bytes.EqualFold(tok, []byte("close")):
					req.keepAlive = false
				case bytes.EqualFold(tok, []byte("keep-alive")):
					req.keepAlive = true
				}
			}
		}
	}
	if req.chunked && req.contentLength >= 0 {
		// RFC 9112 section 6.3: a request smuggling vector; reject it.
		return fmt.Errorf("both content-length and transfer-encoding: %w", errMalformed)
	}
	if req.contentLength < 0 {
		req.contentLength = 0
	}
	return nil
}

// readLine returns one line without its CRLF (or bare LF). The slice is only
// valid until the next read from br.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("line longer than %d bytes: %w", br.Size(), errTooLarge)
		}
		if errors.Is(err, io.EOF) && len(line) > 0 {
			return nil, fmt.Errorf("partial line: %w", io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// isToken reports whether b is a non-empty RFC 9110 token.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte(`"(),/:;<=>?@[\]{}`), c) >= 0 {
			return false
		}
	}
	return true
}
