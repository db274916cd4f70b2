package h2

import (
	"encoding/binary"

	"golang.org/x/net/http2"
)

// Frames are written by appending to the connection's shared write buffer
// rather than through http2.Framer: the Framer copies each frame into its own
// buffer and issues one Write per frame, which is exactly the per-frame cost
// this package exists to avoid. Writing a frame is a 9-byte header and a
// payload; the parsing side, where the validation lives, stays with Framer.

const (
	frameHeaderLen     = 9
	defaultMaxFrame    = 16384
	maxWindow          = 1<<31 - 1
	defaultWindow      = 65535
	preface            = http2.ClientPreface
	defaultHeaderTable = 4096
)

func appendFrameHeader(b []byte, length int, t http2.FrameType, flags http2.Flags, id uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), byte(t), byte(flags),
		byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id))
}

func appendData(b []byte, id uint32, data []byte, endStream bool) []byte {
	var fl http2.Flags
	if endStream {
		fl = http2.FlagDataEndStream
	}
	b = appendFrameHeader(b, len(data), http2.FrameData, fl, id)
	return append(b, data...)
}

// appendHeaderBlock writes a header block as one HEADERS frame followed by as
// many CONTINUATION frames as maxFrame requires.
func appendHeaderBlock(b []byte, id uint32, block []byte, endStream bool, maxFrame int) []byte {
	first := true
	for {
		n := len(block)
		if n > maxFrame {
			n = maxFrame
		}
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
		b = appendFrameHeader(b, n, t, fl, id)
		b = append(b, block[:n]...)
		block = block[n:]
		first = false
		if len(block) == 0 {
			return b
		}
	}
}

func appendRSTStream(b []byte, id uint32, code http2.ErrCode) []byte {
	b = appendFrameHeader(b, 4, http2.FrameRSTStream, 0, id)
	return binary.BigEndian.AppendUint32(b, uint32(code))
}

func appendWindowUpdate(b []byte, id uint32, incr uint32) []byte {
	b = appendFrameHeader(b, 4, http2.FrameWindowUpdate, 0, id)
	return binary.BigEndian.AppendUint32(b, incr&0x7fffffff)
}

func appendSettings(b []byte, settings ...http2.Setting) []byte {
	b = appendFrameHeader(b, 6*len(settings), http2.FrameSettings, 0, 0)
	for _, s := range settings {
		b = binary.BigEndian.AppendUint16(b, uint16(s.ID))
		b = binary.BigEndian.AppendUint32(b, s.Val)
	}
	return b
}

func appendSettingsAck(b []byte) []byte {
	return appendFrameHeader(b, 0, http2.FrameSettings, http2.FlagSettingsAck, 0)
}

func appendPing(b []byte, ack bool, data [8]byte) []byte {
	var fl http2.Flags
	if ack {
		fl = http2.FlagPingAck
	}
	b = appendFrameHeader(b, 8, http2.FramePing, fl, 0)
	return append(b, data[:]...)
}

func appendGoAway(b []byte, lastID uint32, code http2.ErrCode, debug string) []byte {
	b = appendFrameHeader(b, 8+len(debug), http2.FrameGoAway, 0, 0)
	b = binary.BigEndian.AppendUint32(b, lastID&0x7fffffff)
	b = binary.BigEndian.AppendUint32(b, uint32(code))
	return append(b, debug...)
}
