package main

import (
	"bufio"
	"fmt"

	"github.com/omnirelay/omnirelay/bench/internal/h1resp"
)

var errMalformed = h1resp.ErrMalformed

const maxHeaderLines = h1resp.MaxHeaderLines

// readResponse reads one HTTP/1.1 response framed by Content-Length (what
// the benchmark backend sends, and every proxy passes on) and discards its
// body. Chunked or close-delimited bodies are errors: the benchmark never
// expects them, and counting them would hide a proxy rewriting responses.
// keepAlive is false when the connection must not be reused.
func readResponse(br *bufio.Reader) (status int, keepAlive bool, err error) {
	status, keepAlive, framing, length, err := h1resp.ReadHead(br)
	if err != nil {
		return 0, false, err
	}
	if status == 204 || status == 304 || (status >= 100 && status < 200) {
		return status, keepAlive, nil
	}
	switch framing {
	case h1resp.FramingChunked:
		return 0, false, fmt.Errorf("status %d: transfer-encoding not supported: %w", status, errMalformed)
	case h1resp.FramingClose:
		return 0, false, fmt.Errorf("status %d without content-length: %w", status, errMalformed)
	}
	if _, err := br.Discard(int(length)); err != nil {
		return 0, false, fmt.Errorf("body: %w", h1resp.Unexpected(err))
	}
	return status, keepAlive, nil
}
