package http1

import (
	"io"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// ReadResponse parses a response head into resp, which the caller has Reset.
// method is the request's method: a response to HEAD, and a 2xx response to
// CONNECT, has no body. Interim 1xx responses other than 101 are read and
// discarded; 101 returns with Upgrade and Close set. A response with neither
// length nor chunked coding is read until close (ContentLength -1, Close).
// resp.ContentLength is set to Framing.ContentLength, so a HEAD response
// keeps the length it advertised. Hop-by-hop fields are removed as for
// requests ("upgrade" is kept on 101 and 426 only); a malformed response is
// a *Error with status 502.
func (r *Reader) ReadResponse(resp *message.Response, method []byte, lim Limits) (Framing, error) {
	f, err := r.readResponse(resp, method, lim)
	if err != nil {
		return Framing{Close: true}, err
	}
	return f, nil
}

func (r *Reader) readResponse(resp *message.Response, method []byte, lim Limits) (Framing, error) {
	if err := r.beginHead(lim, true); err != nil {
		return Framing{}, err
	}
	for interim := 0; ; interim++ {
		if interim > maxInterim {
			return Framing{}, r.fail(502, "too many interim responses")
		}
		r.st = headState{}
		r.connVals = r.connVals[:0]
		line, err := r.readLine(r.lim.MaxRequestLine, 502, "status line too long")
		if err != nil {
			if err == io.EOF && interim > 0 {
				return Framing{}, io.ErrUnexpectedEOF
			}
			return Framing{}, err
		}
		r.st.bytes = len(line) + 2
		status, minor, err := r.parseStatusLine(line)
		if err != nil {
			return Framing{}, err
		}
		if status < 200 && status != 101 {
			r.scratch.Reset()
			if err := r.readFields(&r.scratch, modeResponse); err != nil {
				return Framing{}, err
			}
			continue
		}
		resp.Status = status
		if err := r.readFields(&resp.Header, modeResponse); err != nil {
			return Framing{}, err
		}
		return r.responseFraming(resp, method, minor)
	}
}

// parseStatusLine parses "HTTP/1.x SP 3DIGIT [SP reason]"; the reason is
// validated and dropped (the proxy writes the standard phrase).
func (r *Reader) parseStatusLine(line []byte) (status int, minor uint8, err error) {
	if len(line) < 12 || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return 0, 0, r.fail(502, "malformed status line")
	}
	_, minor, err = r.parseVersion(line[:8])
	if err != nil {
		return 0, 0, err
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, 0, r.fail(502, "malformed status code")
		}
		status = status*10 + int(c-'0')
	}
	if status < 100 {
		return 0, 0, r.fail(502, "malformed status code")
	}
	if len(line) > 12 {
		for _, c := range line[13:] {
			if charClass[c]&clsValue == 0 {
				return 0, 0, r.fail(502, "invalid reason phrase")
			}
		}
	}
	return status, minor, nil
}

func (r *Reader) responseFraming(resp *message.Response, method []byte, minor uint8) (Framing, error) {
	st := &r.st
	status := resp.Status
	http11 := minor == 1
	if st.upgrades > 1 {
		return Framing{}, r.fail(502, "repeated upgrade header")
	}
	if st.te.seen && st.cls > 0 {
		return Framing{}, r.fail(502, "both content-length and transfer-encoding")
	}
	f := Framing{ContentLength: 0}
	if st.cls > 0 {
		f.ContentLength = st.cl
	}
	if http11 {
		f.Close = st.connClose
	} else {
		f.Close = !st.connKeepAlive || st.connClose
	}
	isConnect := string(method) == "CONNECT"
	switch {
	case status == 101:
		f.Upgrade, f.NoBody, f.Close = true, true, true
	case status < 200 || status == 204 || status == 304 || string(method) == "HEAD":
		f.NoBody = true
		if st.cls == 0 {
			f.ContentLength = 0
		}
	case isConnect && status < 300:
		f.NoBody, f.Close = true, true
		f.ContentLength = 0
	case st.te.seen:
		if !http11 {
			return Framing{}, r.fail(502, "transfer-encoding in HTTP/1.0")
		}
		if s, reason := st.te.verdict(); s != 0 {
			return Framing{}, r.fail(502, reason)
		}
		f.Chunked = true
		f.ContentLength = -1
	case st.cls == 0:
		f.ContentLength = -1
		f.Close = true
	}

	h := &resp.Header
	r.dropConnectionFields(h)
	// Upgrade means something only on 101 and 426 (RFC 9110 7.8, 15.5.22);
	// elsewhere (an advertised h2c) it would mislead the downstream client.
	if (status == 101 || status == 426) && len(st.upgrade) > 0 {
		h.AddLowerNoCopy(arenaString(h, "upgrade"), st.upgrade)
	}
	resp.ContentLength = f.ContentLength
	r.inBody = !f.NoBody && f.ContentLength != 0
	return f, nil
}
