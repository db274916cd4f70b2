package main

import (
	"bufio"

	"github.com/omnirelay/omnirelay/bench/internal/h1resp"
)

var errMalformed = h1resp.ErrMalformed

// readResponse reads one response and discards its body (h1resp.Read).
func readResponse(br *bufio.Reader, head bool) (status int, keepAlive bool, err error) {
	return h1resp.Read(br, head)
}
