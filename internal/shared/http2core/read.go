package http2core

import (
	"bufio"
	"encoding/binary"
	"io"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// HeadersFrame is a HEADERS frame read without http2.Framer's per-frame
// allocation (one HEADERS frame per request on each side of a proxy).
// Framer still reads the frame header, so its size limit and CONTINUATION
// sequencing checks apply; only the payload is read and parsed here.
type HeadersFrame struct {
	StreamID      uint32
	EndStream     bool
	EndHeaders    bool
	SelfDependent bool   // the priority names the stream itself (RFC 9113 5.3.1)
	Fragment      []byte // valid until the next read
	buf           []byte
}

// ReadFrame returns the next frame read through fr, whose reader is br: a
// HEADERS frame in hf (f == nil), any other as Framer parsed it.
func ReadFrame(fr *http2.Framer, br io.Reader, hf *HeadersFrame) (f http2.Frame, err error) {
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
		return nil, ConnError{http2.ErrCodeProtocol, "HEADERS frame with stream ID 0"}
	}
	pad := 0
	if fh.Flags.Has(http2.FlagHeadersPadded) {
		if len(p) < 1 {
			return nil, ConnError{http2.ErrCodeProtocol, "HEADERS frame too short for padding"}
		}
		pad, p = int(p[0]), p[1:]
	}
	hf.SelfDependent = false
	if fh.Flags.Has(http2.FlagHeadersPriority) {
		if len(p) < 5 {
			return nil, ConnError{http2.ErrCodeProtocol, "HEADERS frame too short for priority"}
		}
		hf.SelfDependent = binary.BigEndian.Uint32(p)&0x7fffffff == fh.StreamID
		p = p[5:]
	}
	if pad > len(p) {
		// The block cannot be decoded, so HPACK state is lost: a
		// connection error, as RFC 9113 6.2 says.
		return nil, ConnError{http2.ErrCodeProtocol, "HEADERS padding larger than payload"}
	}
	hf.StreamID = fh.StreamID
	hf.EndStream = fh.Flags.Has(http2.FlagHeadersEndStream)
	hf.EndHeaders = fh.Flags.Has(http2.FlagHeadersEndHeaders)
	hf.Fragment = p[:len(p)-pad]
	return nil, nil
}

// HeaderBlock is a complete header block: a HEADERS frame's fragment and
// those of the CONTINUATION frames after it.
type HeaderBlock struct {
	StreamID      uint32
	EndStream     bool // on the HEADERS frame
	SelfDependent bool // the HEADERS frame's priority named its own stream
	Block         []byte
}

// BlockAssembler joins a HEADERS frame and its CONTINUATION frames into one
// header block of at most Limit bytes. Framer has already checked that
// CONTINUATION frames follow their HEADERS frame on the same stream with
// nothing in between.
type BlockAssembler struct {
	// Limit bounds an assembled block; a longer one is a connection error
	// of type ENHANCE_YOUR_CALM (the block cannot be skipped without
	// decoding it, so the connection's HPACK state would be lost anyway).
	Limit int
	buf   []byte
	cur   HeaderBlock
}

// Headers starts a block with hf. It returns the block if hf ends it
// (END_HEADERS), valid until the next call, or a ConnError if hf's fragment
// alone passes Limit.
func (a *BlockAssembler) Headers(hf *HeadersFrame) (*HeaderBlock, bool, error) {
	if len(hf.Fragment) > a.Limit {
		return nil, false, errBlockTooLarge
	}
	a.cur = HeaderBlock{StreamID: hf.StreamID, EndStream: hf.EndStream, SelfDependent: hf.SelfDependent}
	if hf.EndHeaders {
		a.cur.Block = hf.Fragment
		return &a.cur, true, nil
	}
	a.buf = append(a.buf[:0], hf.Fragment...)
	return nil, false, nil
}

var errBlockTooLarge = ConnError{http2.ErrCodeEnhanceYourCalm, "header block too large"}

// Continuation adds a CONTINUATION frame's fragment. It returns the block
// once the frame ends it, or a ConnError once the block passes Limit.
func (a *BlockAssembler) Continuation(f *http2.ContinuationFrame) (*HeaderBlock, bool, error) {
	a.buf = append(a.buf, f.HeaderBlockFragment()...)
	if len(a.buf) > a.Limit {
		return nil, false, errBlockTooLarge
	}
	if !f.HeadersEnded() {
		return nil, false, nil
	}
	a.cur.Block = a.buf
	return &a.cur, true, nil
}

// FrameReader reads one connection's frames: HEADERS through ReadFrame and
// header blocks assembled across CONTINUATION frames. It is owned by the
// connection's reader goroutine.
type FrameReader struct {
	// Framer parses every frame other than HEADERS.
	Framer *http2.Framer
	br     *bufio.Reader
	hf     HeadersFrame
	asm    BlockAssembler
}

// NewFrameReader reads from r through a bufSize read buffer, accepts frames
// up to DefaultMaxFrameSize and header blocks up to blockLimit bytes.
func NewFrameReader(r io.Reader, bufSize, blockLimit int) *FrameReader {
	fr := &FrameReader{br: bufio.NewReaderSize(r, bufSize)}
	fr.Framer = http2.NewFramer(nil, fr.br)
	fr.Framer.SetMaxReadFrameSize(DefaultMaxFrameSize)
	fr.Framer.SetReuseFrames()
	fr.asm.Limit = blockLimit
	return fr
}

// ReadPreface reads the client preface (a server's first read).
func (r *FrameReader) ReadPreface() error { return ReadPreface(r.br) }

// Next returns the next frame, or, for HEADERS and CONTINUATION frames, the
// complete header block once it has been read (f == nil); the block is
// valid until the next call. Errors are the Framer's (an http2.StreamError
// leaves the connection usable) or a ConnError.
func (r *FrameReader) Next() (f http2.Frame, hb *HeaderBlock, err error) {
	for {
		f, err := ReadFrame(r.Framer, r.br, &r.hf)
		if err != nil {
			return nil, nil, err
		}
		if f == nil {
			hb, ok, err := r.asm.Headers(&r.hf)
			if err != nil || ok {
				return nil, hb, err
			}
			continue
		}
		if cf, ok := f.(*http2.ContinuationFrame); ok {
			hb, ok, err := r.asm.Continuation(cf)
			if err != nil || ok {
				return nil, hb, err
			}
			continue
		}
		return f, nil, nil
	}
}

// MaxBlockSlack is how far an encoded header block (and one string in it)
// may exceed the header list limit before the connection is dropped. Up to
// there the block is decoded, so the connection's HPACK state stays in step,
// and a list over the limit is refused on its stream alone.
const MaxBlockSlack = 64 << 10

// BlockLimit is the largest header block accepted for a header list limit of
// maxList bytes.
func BlockLimit(maxList uint32) int { return int(maxList) + MaxBlockSlack }

// NewDecoder returns an HPACK decoder with the default table size that
// emits each field to emit and refuses strings longer than
// BlockLimit(maxList).
func NewDecoder(maxList uint32, emit func(hpack.HeaderField)) *hpack.Decoder {
	d := hpack.NewDecoder(DefaultHeaderTableSize, emit)
	d.SetMaxStringLength(BlockLimit(maxList))
	return d
}

// DecodeBlock decodes a complete header block. An HPACK error is a
// connection error of type COMPRESSION_ERROR (RFC 9113 4.3).
func DecodeBlock(d *hpack.Decoder, block []byte) error {
	if _, err := d.Write(block); err != nil {
		return ConnError{http2.ErrCodeCompression, err.Error()}
	}
	if err := d.Close(); err != nil {
		return ConnError{http2.ErrCodeCompression, err.Error()}
	}
	return nil
}
