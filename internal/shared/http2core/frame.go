package http2core

import (
	"encoding/binary"
	"errors"
	"io"

	"golang.org/x/net/http2"
)

// Frames are written by appending to a caller's buffer rather than through
// http2.Framer: the Framer copies each frame into its own buffer and issues
// one Write per frame. Writing a frame is a 9-byte header and a payload; the
// parsing side, where the validation lives, stays with Framer.

// Protocol constants of RFC 9113 used by both planes.
const (
	// FrameHeaderLen is the size of a frame header.
	FrameHeaderLen = 9
	// DefaultMaxFrameSize is SETTINGS_MAX_FRAME_SIZE until the peer says
	// otherwise, and the largest frame either plane reads.
	DefaultMaxFrameSize = 16384
	// MaxWindow is the largest flow-control window (2^31-1).
	MaxWindow = 1<<31 - 1
	// DefaultWindow is the initial connection and stream window (65,535).
	DefaultWindow = 65535
	// DefaultHeaderTableSize is the initial HPACK dynamic table size.
	DefaultHeaderTableSize = 4096
	// ClientPreface is what a client sends before its SETTINGS.
	ClientPreface = http2.ClientPreface
)

// ErrBadPreface is returned by ReadPreface for bytes that are not the
// client preface.
var ErrBadPreface = errors.New("http2: bad client connection preface")

// ReadPreface reads and checks the client connection preface. An I/O error
// is returned as is.
func ReadPreface(r io.Reader) error {
	var b [len(ClientPreface)]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	if string(b[:]) != ClientPreface {
		return ErrBadPreface
	}
	return nil
}

// AppendFrameHeader appends a frame header. The reserved bit of the stream
// id is cleared.
func AppendFrameHeader(b []byte, length int, t http2.FrameType, flags http2.Flags, id uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), byte(t), byte(flags),
		byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id))
}

// AppendData appends one DATA frame carrying data (within the peer's frame
// size and flow-control windows: the caller's business).
func AppendData(b []byte, id uint32, data []byte, endStream bool) []byte {
	var fl http2.Flags
	if endStream {
		fl = http2.FlagDataEndStream
	}
	b = AppendFrameHeader(b, len(data), http2.FrameData, fl, id)
	return append(b, data...)
}

// AppendHeaderBlock writes a header block as one HEADERS frame followed by
// as many CONTINUATION frames as maxFrame requires.
func AppendHeaderBlock(b []byte, id uint32, block []byte, endStream bool, maxFrame int) []byte {
	first := true
	for {
		n := min(len(block), maxFrame)
		var fl http2.Flags
		if n == len(block) {
			fl |= http2.FlagHeadersEndHeaders
		}
		t := http2.FrameContinuation
		if first {
			t = http2.FrameHeaders
			if endStream {
				fl |= http2.FlagHeadersEndStream
			}
		}
		b = AppendFrameHeader(b, n, t, fl, id)
		b = append(b, block[:n]...)
		block = block[n:]
		first = false
		if len(block) == 0 {
			return b
		}
	}
}

// AppendRSTStream appends RST_STREAM.
func AppendRSTStream(b []byte, id uint32, code http2.ErrCode) []byte {
	b = AppendFrameHeader(b, 4, http2.FrameRSTStream, 0, id)
	return binary.BigEndian.AppendUint32(b, uint32(code))
}

// AppendWindowUpdate appends WINDOW_UPDATE for the connection (id 0) or a
// stream.
func AppendWindowUpdate(b []byte, id uint32, incr uint32) []byte {
	b = AppendFrameHeader(b, 4, http2.FrameWindowUpdate, 0, id)
	return binary.BigEndian.AppendUint32(b, incr&0x7fffffff)
}

// AppendSettings appends a SETTINGS frame with settings in order.
func AppendSettings(b []byte, settings ...http2.Setting) []byte {
	b = AppendFrameHeader(b, 6*len(settings), http2.FrameSettings, 0, 0)
	for _, s := range settings {
		b = binary.BigEndian.AppendUint16(b, uint16(s.ID))
		b = binary.BigEndian.AppendUint32(b, s.Val)
	}
	return b
}

// AppendSettingsAck appends the acknowledgement of the peer's SETTINGS.
func AppendSettingsAck(b []byte) []byte {
	return AppendFrameHeader(b, 0, http2.FrameSettings, http2.FlagSettingsAck, 0)
}

// AppendPing appends PING (or its acknowledgement) with data.
func AppendPing(b []byte, ack bool, data [8]byte) []byte {
	var fl http2.Flags
	if ack {
		fl = http2.FlagPingAck
	}
	b = AppendFrameHeader(b, 8, http2.FramePing, fl, 0)
	return append(b, data[:]...)
}

// AppendGoAway appends GOAWAY naming lastID, with debug data (may be empty).
func AppendGoAway(b []byte, lastID uint32, code http2.ErrCode, debug string) []byte {
	b = AppendFrameHeader(b, 8+len(debug), http2.FrameGoAway, 0, 0)
	b = binary.BigEndian.AppendUint32(b, lastID&0x7fffffff)
	b = binary.BigEndian.AppendUint32(b, uint32(code))
	return append(b, debug...)
}
