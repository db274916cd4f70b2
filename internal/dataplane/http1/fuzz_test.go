package http1

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// Seeds live in testdata/fuzz/<FuzzName>/.

var fuzzLimits = Limits{MaxRequestLine: 2048, MaxHeaderBytes: 8 << 10, MaxHeaders: 64}

// FuzzReadRequest parses a connection's worth of bytes: it must never panic,
// every accepted request must have one unambiguous framing and clean fields,
// and what the serialiser writes for it must parse back to the same request.
func FuzzReadRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		rd := NewReader(bytes.NewReader(data), 4096)
		var req message.Request
		for i := 0; i < 8; i++ {
			req.Reset()
			fr, err := rd.ReadRequest(&req, fuzzLimits)
			if err != nil {
				checkParseError(t, err, fr, 400, 505)
				return
			}
			checkFraming(t, fr, req.ContentLength, true)
			checkFields(t, &req.Header, fr.Upgrade)
			checkRequestLine(t, &req)
			reparseRequest(t, &req, fr)
			n, err := io.Copy(io.Discard, rd.BodyReader(fr, &req.Trailer))
			if err != nil {
				checkBodyError(t, err)
				return
			}
			if !fr.Chunked && n != fr.ContentLength {
				t.Fatalf("body of %d bytes, content-length %d", n, fr.ContentLength)
			}
			checkFields(t, &req.Trailer, false)
			if fr.Close || fr.Upgrade || string(req.Method) == "CONNECT" {
				return
			}
		}
	})
}

// FuzzReadResponse is FuzzReadRequest for response heads; head selects a
// response to HEAD.
func FuzzReadResponse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		method := []byte("GET")
		if head {
			method = []byte("HEAD")
		}
		rd := NewReader(bytes.NewReader(data), 4096)
		var resp message.Response
		for i := 0; i < 4; i++ {
			resp.Reset()
			fr, err := rd.ReadResponse(&resp, method, fuzzLimits)
			if err != nil {
				checkParseError(t, err, fr, 502, 502)
				return
			}
			if resp.Status < 101 || resp.Status > 999 || (resp.Status < 200 && resp.Status != 101) {
				t.Fatalf("status %d returned", resp.Status)
			}
			if !fr.NoBody {
				checkFraming(t, fr, resp.ContentLength, false)
			} else if fr.Chunked {
				t.Fatalf("NoBody and Chunked: %+v", fr)
			}
			checkFields(t, &resp.Header, resp.Status == 101 || resp.Status == 426)
			reparseResponse(t, &resp, fr, method)
			if fr.NoBody {
				if fr.Close {
					return
				}
				continue
			}
			n, err := io.Copy(io.Discard, rd.BodyReader(fr, &resp.Trailer))
			if err != nil {
				checkBodyError(t, err)
				return
			}
			if !fr.Chunked && fr.ContentLength >= 0 && n != fr.ContentLength {
				t.Fatalf("body of %d bytes, content-length %d", n, fr.ContentLength)
			}
			if fr.Close {
				return
			}
		}
	})
}

// FuzzChunked decodes a chunked body; what it accepts must re-encode and
// decode to the same bytes and trailers.
func FuzzChunked(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		rd := NewReader(bytes.NewReader(data), 4096)
		var tr message.Headers
		body, err := io.ReadAll(rd.BodyReader(Framing{Chunked: true, ContentLength: -1}, &tr))
		if err != nil {
			checkBodyError(t, err)
			return
		}
		checkFields(t, &tr, false)
		var wire bytes.Buffer
		var cw ChunkedWriter
		cw.Reset(&wire)
		if _, err := cw.Write(body); err != nil {
			t.Fatal(err)
		}
		if err := cw.Close(&tr); err != nil {
			t.Fatal(err)
		}
		rd2 := NewReader(&wire, 4096)
		var tr2 message.Headers
		body2, err := io.ReadAll(rd2.BodyReader(Framing{Chunked: true, ContentLength: -1}, &tr2))
		if err != nil {
			t.Fatalf("re-encoded body does not parse: %v\n%q", err, wire.Bytes())
		}
		if !bytes.Equal(body, body2) || !sameFields(&tr, &tr2, "") {
			t.Fatalf("round trip changed the body or trailers")
		}
	})
}

func checkParseError(t *testing.T, err error, fr Framing, lo, hi int) {
	t.Helper()
	if !fr.Close {
		t.Fatalf("error %v without Framing.Close", err)
	}
	var pe *Error
	if errors.As(err, &pe) {
		if pe.Status < lo || pe.Status > hi {
			t.Fatalf("error status %d out of [%d,%d]", pe.Status, lo, hi)
		}
		return
	}
	if err != io.EOF && err != io.ErrUnexpectedEOF {
		t.Fatalf("unexpected error type %T: %v", err, err)
	}
}

func checkBodyError(t *testing.T, err error) {
	t.Helper()
	var pe *Error
	if !errors.As(err, &pe) && err != io.ErrUnexpectedEOF {
		t.Fatalf("unexpected body error %T: %v", err, err)
	}
}

// checkFraming asserts that exactly one body delimitation was chosen.
func checkFraming(t *testing.T, fr Framing, msgCL int64, request bool) {
	t.Helper()
	switch {
	case fr.Chunked && (fr.ContentLength != -1 || fr.NoBody):
		t.Fatalf("ambiguous chunked framing %+v", fr)
	case fr.ContentLength < -1 || (request && !fr.Chunked && fr.ContentLength < 0):
		t.Fatalf("invalid length %+v", fr)
	case request && fr.NoBody != (!fr.Chunked && fr.ContentLength == 0):
		t.Fatalf("NoBody inconsistent %+v", fr)
	case !request && !fr.Chunked && fr.ContentLength == -1 && !fr.Close:
		t.Fatalf("read-until-close body on a kept connection %+v", fr)
	case msgCL != fr.ContentLength:
		t.Fatalf("message ContentLength %d, framing %+v", msgCL, fr)
	}
}

// checkFields asserts that no framing or hop-by-hop field survived and that
// names and values are clean.
func checkFields(t *testing.T, h *message.Headers, upgradeAllowed bool) {
	t.Helper()
	for i := 0; i < h.Len(); i++ {
		f := h.At(i)
		switch string(f.Name) {
		case "transfer-encoding", "connection", "keep-alive", "proxy-connection", "host":
			t.Fatalf("hop-by-hop field %q kept", f.Name)
		case "upgrade":
			if !upgradeAllowed {
				t.Fatalf("upgrade kept without Upgrade")
			}
		case "content-length":
			if h.Count("content-length") != 1 {
				t.Fatalf("several content-length fields")
			}
		}
		if !validName(f.Name) {
			t.Fatalf("invalid name %q", f.Name)
		}
		for _, c := range f.Name {
			if 'A' <= c && c <= 'Z' {
				t.Fatalf("name %q not lower-case", f.Name)
			}
		}
		for _, c := range f.Value {
			if charClass[c]&clsValue == 0 {
				t.Fatalf("value %q holds byte %#x", f.Value, c)
			}
		}
		if v := f.Value; len(v) > 0 && (v[0] == ' ' || v[0] == '\t' || v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
			t.Fatalf("value %q not trimmed", v)
		}
	}
}

func checkRequestLine(t *testing.T, req *message.Request) {
	t.Helper()
	if !validName(req.Method) {
		t.Fatalf("method %q", req.Method)
	}
	if string(req.Method) == "CONNECT" {
		if len(req.Path) != 0 || len(req.Authority) == 0 {
			t.Fatalf("CONNECT path %q authority %q", req.Path, req.Authority)
		}
	} else if len(req.Path) == 0 || (req.Path[0] != '/' && string(req.Path) != "*") {
		t.Fatalf("path %q", req.Path)
	}
	for _, c := range req.Authority {
		if charClass[c]&clsHost == 0 {
			t.Fatalf("authority %q", req.Authority)
		}
	}
}

// reparseRequest serialises req and parses it back.
func reparseRequest(t *testing.T, req *message.Request, fr Framing) {
	t.Helper()
	wire := AppendRequestHead(nil, req, fr.Chunked)
	rd := NewReader(bytes.NewReader(wire), 4096)
	var got message.Request
	fr2, err := rd.ReadRequest(&got, Limits{})
	if err != nil {
		t.Fatalf("serialised request does not parse: %v\n%q", err, wire)
	}
	if string(got.Method) != string(req.Method) || string(got.Path) != string(req.Path) ||
		string(got.Authority) != string(req.Authority) {
		t.Fatalf("request line changed: %q %q %q -> %q %q %q", req.Method, req.Path, req.Authority, got.Method, got.Path, got.Authority)
	}
	if fr2.Chunked != fr.Chunked || got.ContentLength != req.ContentLength || fr2.Upgrade != fr.Upgrade {
		t.Fatalf("framing changed: %+v -> %+v", fr, fr2)
	}
	if !sameFields(&req.Header, &got.Header, "content-length") {
		t.Fatalf("fields changed:\n%q", wire)
	}
}

func reparseResponse(t *testing.T, resp *message.Response, fr Framing, method []byte) {
	t.Helper()
	wire := AppendResponseHead(nil, resp, fr.Chunked, !fr.Close)
	rd := NewReader(bytes.NewReader(wire), 4096)
	var got message.Response
	fr2, err := rd.ReadResponse(&got, method, Limits{})
	if err != nil {
		t.Fatalf("serialised response does not parse: %v\n%q", err, wire)
	}
	if got.Status != resp.Status || fr2.Chunked != fr.Chunked || fr2.NoBody != fr.NoBody {
		t.Fatalf("response changed: %d %+v -> %d %+v", resp.Status, fr, got.Status, fr2)
	}
	if !sameFields(&resp.Header, &got.Header, "content-length") {
		t.Fatalf("fields changed:\n%q", wire)
	}
}

// sameFields compares two headers in order, ignoring the field named skip.
func sameFields(a, b *message.Headers, skip string) bool {
	i, j := 0, 0
	for {
		for i < a.Len() && string(a.At(i).Name) == skip {
			i++
		}
		for j < b.Len() && string(b.At(j).Name) == skip {
			j++
		}
		if i == a.Len() || j == b.Len() {
			return i == a.Len() && j == b.Len()
		}
		fa, fb := a.At(i), b.At(j)
		if !bytes.Equal(fa.Name, fb.Name) || !bytes.Equal(fa.Value, fb.Value) {
			return false
		}
		i++
		j++
	}
}
