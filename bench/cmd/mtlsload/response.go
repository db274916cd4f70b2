package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

var errMalformed = errors.New("malformed response")

// maxHeaderLines bounds a response head, together with the reader's
// buffer, which bounds each line.
const maxHeaderLines = 100

// readResponse reads one HTTP/1.1 response framed by Content-Length (what
// the benchmark backend sends, and every proxy passes on) and discards its
// body. Chunked or close-delimited bodies are errors: the benchmark never
// expects them, and counting them would hide a proxy rewriting responses.
// keepAlive is false when the connection must not be reused.
func readResponse(br *bufio.Reader) (status int, keepAlive bool, err error) {
	line, err := readLine(br)
	if err != nil {
		return 0, false, fmt.Errorf("status line: %w", err)
	}
	version, rest, _ := bytes.Cut(line, []byte{' '})
	switch string(version) {
	case "HTTP/1.1":
		keepAlive = true
	case "HTTP/1.0":
	default:
		return 0, false, fmt.Errorf("status line %q: %w", line, errMalformed)
	}
	code, _, _ := bytes.Cut(rest, []byte{' '})
	if len(code) != 3 || code[0] < '1' || code[0] > '5' || !isDigits(code) {
		return 0, false, fmt.Errorf("status line %q: %w", line, errMalformed)
	}
	status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	length := int64(-1)
	for n := 0; ; n++ {
		if n == maxHeaderLines {
			return 0, false, fmt.Errorf("more than %d header lines: %w", maxHeaderLines, errMalformed)
		}
		line, err := readLine(br)
		if err != nil {
			return 0, false, fmt.Errorf("header block: %w", unexpected(err))
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok || len(name) == 0 {
			return 0, false, fmt.Errorf("header line %q: %w", line, errMalformed)
		}
		value = bytes.Trim(value, " \t")
		switch {
		case bytes.EqualFold(name, []byte("content-length")):
			if !isDigits(value) || len(value) > 12 {
				return 0, false, fmt.Errorf("content-length %q: %w", value, errMalformed)
			}
			var cl int64
			for _, c := range value {
				cl = cl*10 + int64(c-'0')
			}
			if length >= 0 && cl != length {
				return 0, false, fmt.Errorf("conflicting content-length %q: %w", value, errMalformed)
			}
			length = cl
		case bytes.EqualFold(name, []byte("transfer-encoding")):
			return 0, false, fmt.Errorf("transfer-encoding %q not supported: %w", value, errMalformed)
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
	if status == 204 || status == 304 || (status >= 100 && status < 200) {
		return status, keepAlive, nil
	}
	if length < 0 {
		return 0, false, fmt.Errorf("status %d without content-length: %w", status, errMalformed)
	}
	if _, err := br.Discard(int(length)); err != nil {
		return 0, false, fmt.Errorf("body: %w", unexpected(err))
	}
	return status, keepAlive, nil
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

// unexpected turns a clean EOF inside a response into io.ErrUnexpectedEOF.
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
