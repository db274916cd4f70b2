package h2

import (
	"bufio"
	"encoding/binary"
	"io"

	"golang.org/x/net/http2"
)

// headersFrame is a HEADERS frame read without http2.Framer's per-frame
// allocation (one HEADERS frame per request on each side of the proxy).
// Framer still reads the frame header, so its size limit and CONTINUATION
// sequencing checks apply; only the payload is read and parsed here.
type headersFrame struct {
	id        uint32
	endStream bool
	endHdrs   bool
	selfDep   bool // priority names the stream itself (RFC 9113 5.3.1)
	frag      []byte
	buf       []byte
}

// readFrame returns the next frame: a HEADERS frame in hf (f == nil), any
// other as Framer parsed it.
func readFrame(fr *http2.Framer, br *bufio.Reader, hf *headersFrame) (f http2.Frame, err error) {
	fh, err := fr.ReadFrameHeader()
	if err != nil {
		return nil, err
	}
	if fh.Type != http2.FrameHeaders {
		return fr.ReadFrameForHeader(fh)
	}
	n := int(fh.Length)
	if cap(hf.buf) < n {
		hf.buf = make([]byte, n)
	}
	p := hf.buf[:n]
	if _, err := io.ReadFull(br, p); err != nil {
		return nil, err
	}
	if fh.StreamID == 0 {
		return nil, connError{http2.ErrCodeProtocol, "HEADERS frame with stream ID 0"}
	}
	pad := 0
	if fh.Flags.Has(http2.FlagHeadersPadded) {
		if len(p) < 1 {
			return nil, connError{http2.ErrCodeProtocol, "HEADERS frame too short for padding"}
		}
		pad, p = int(p[0]), p[1:]
	}
	hf.selfDep = false
	if fh.Flags.Has(http2.FlagHeadersPriority) {
		if len(p) < 5 {
			return nil, connError{http2.ErrCodeProtocol, "HEADERS frame too short for priority"}
		}
		hf.selfDep = binary.BigEndian.Uint32(p)&0x7fffffff == fh.StreamID
		p = p[5:]
	}
	if pad > len(p) {
		// The block cannot be decoded, so HPACK state is lost: a
		// connection error, as RFC 9113 6.2 says.
		return nil, connError{http2.ErrCodeProtocol, "HEADERS padding larger than payload"}
	}
	hf.id = fh.StreamID
	hf.endStream = fh.Flags.Has(http2.FlagHeadersEndStream)
	hf.endHdrs = fh.Flags.Has(http2.FlagHeadersEndHeaders)
	hf.frag = p[:len(p)-pad]
	return nil, nil
}
