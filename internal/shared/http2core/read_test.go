package http2core

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// headerBlock encodes fields with x/net's encoder, as a peer would.
func headerBlock(t testing.TB, fields ...string) []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for i := 0; i+1 < len(fields); i += 2 {
		if err := enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]}); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func TestFrameReaderHeaderBlocks(t *testing.T) {
	block := headerBlock(t, ":method", "GET", ":path", "/a/long/enough/path", "x-one", "1", "x-two", "2")
	padded := func(id uint32, flags http2.Flags, prio []byte, frag []byte, pad int) []byte {
		p := []byte{byte(pad)}
		p = append(p, prio...)
		p = append(p, frag...)
		p = append(p, make([]byte, pad)...)
		return append(AppendFrameHeader(nil, len(p), http2.FrameHeaders, flags|http2.FlagHeadersPadded, id), p...)
	}
	selfDep := binary.BigEndian.AppendUint32(nil, 3)
	selfDep = append(selfDep, 15)
	tests := []struct {
		name    string
		in      []byte
		limit   int
		want    *HeaderBlock // nil: an error
		code    http2.ErrCode
		framer  bool // the error is the Framer's, not a ConnError
		trailer bool // a PING follows and must come out after the block
	}{
		{name: "one frame", in: AppendHeaderBlock(nil, 1, block, true, 16384), limit: 1024,
			want: &HeaderBlock{StreamID: 1, EndStream: true, Block: block}},
		{name: "split over CONTINUATION", in: AppendHeaderBlock(nil, 3, block, false, 5), limit: 1024,
			want: &HeaderBlock{StreamID: 3, Block: block}, trailer: true},
		{name: "padded", in: padded(5, http2.FlagHeadersEndHeaders, nil, block, 7), limit: 1024,
			want: &HeaderBlock{StreamID: 5, Block: block}},
		{name: "self dependent", in: padded(3, http2.FlagHeadersEndHeaders|http2.FlagHeadersPriority, selfDep, block, 0), limit: 1024,
			want: &HeaderBlock{StreamID: 3, SelfDependent: true, Block: block}},
		{name: "block at the limit", in: AppendHeaderBlock(nil, 1, block, false, 4), limit: len(block),
			want: &HeaderBlock{StreamID: 1, Block: block}},
		{name: "block over the limit", in: AppendHeaderBlock(nil, 1, block, false, 4), limit: len(block) - 1,
			code: http2.ErrCodeEnhanceYourCalm},
		{name: "one frame over the limit", in: AppendHeaderBlock(nil, 1, block, false, 16384), limit: len(block) - 1,
			code: http2.ErrCodeEnhanceYourCalm},
		{name: "stream 0", in: AppendHeaderBlock(nil, 0, block, false, 16384), limit: 1024, code: http2.ErrCodeProtocol},
		{name: "padding past the payload", in: append(AppendFrameHeader(nil, 2, http2.FrameHeaders, http2.FlagHeadersPadded|http2.FlagHeadersEndHeaders, 1), 9, 0x82),
			limit: 1024, code: http2.ErrCodeProtocol},
		{name: "frame between HEADERS and CONTINUATION",
			in:    append(append(AppendFrameHeader(nil, 4, http2.FrameHeaders, 0, 1), block[:4]...), AppendPing(nil, false, [8]byte{})...),
			limit: 1024, code: http2.ErrCodeProtocol, framer: true},
		{name: "CONTINUATION on another stream",
			in: append(append(AppendFrameHeader(nil, 4, http2.FrameHeaders, 0, 1), block[:4]...),
				append(AppendFrameHeader(nil, len(block)-4, http2.FrameContinuation, http2.FlagContinuationEndHeaders, 3), block[4:]...)...),
			limit: 1024, code: http2.ErrCodeProtocol, framer: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			if tc.trailer {
				in = AppendPing(in, false, [8]byte{1})
			}
			r := NewFrameReader(bytesReader(in), 4096, tc.limit)
			f, hb, err := r.Next()
			if tc.want == nil {
				code, ok := ConnErrorCode(err)
				if !ok || code != tc.code {
					t.Fatalf("err %v, want connection error %v", err, tc.code)
				}
				if _, isOurs := errors.AsType[ConnError](err); isOurs == tc.framer {
					t.Fatalf("err %T (%v): framer's %v", err, err, tc.framer)
				}
				return
			}
			if err != nil || hb == nil || f != nil {
				t.Fatalf("frame %v block %v err %v", f, hb, err)
			}
			if hb.StreamID != tc.want.StreamID || hb.EndStream != tc.want.EndStream ||
				hb.SelfDependent != tc.want.SelfDependent || !bytes.Equal(hb.Block, tc.want.Block) {
				t.Fatalf("got %+v, want %+v", hb, tc.want)
			}
			var fields []string
			dec := NewDecoder(1024, func(f hpack.HeaderField) { fields = append(fields, f.Name) })
			if err := DecodeBlock(dec, hb.Block); err != nil || len(fields) != 4 {
				t.Fatalf("decoded %v, %v", fields, err)
			}
			if tc.trailer {
				f, _, err := r.Next()
				if p, ok := f.(*http2.PingFrame); !ok || err != nil || p.Data[0] != 1 {
					t.Fatalf("after the block: %v %v", f, err)
				}
			}
			if _, _, err := r.Next(); err != io.EOF {
				t.Fatalf("at the end: %v, want EOF", err)
			}
		})
	}
}

func TestDecodeBlockCompressionError(t *testing.T) {
	err := DecodeBlock(NewDecoder(1024, func(hpack.HeaderField) {}), []byte{0xff, 0xff, 0xff})
	if code, ok := ConnErrorCode(err); !ok || code != http2.ErrCodeCompression {
		t.Fatalf("err %v, want COMPRESSION_ERROR", err)
	}
	// A string longer than BlockLimit is refused by the decoder, not buffered.
	long := headerBlock(t, "x-long", string(bytes.Repeat([]byte{'a'}, BlockLimit(16)+1)))
	if err := DecodeBlock(NewDecoder(16, func(hpack.HeaderField) {}), long); err == nil {
		t.Fatal("a string past the block limit was decoded")
	}
}

// Every frame writer produces what the Framer parses back.
func TestFrameWritersParse(t *testing.T) {
	var b []byte
	b = AppendData(b, 1, []byte("body"), true)
	b = AppendRSTStream(b, 3, http2.ErrCodeCancel)
	b = AppendWindowUpdate(b, 0, 1<<20)
	b = AppendSettingsAck(b)
	b = AppendPing(b, true, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
	b = AppendGoAway(b, 7, http2.ErrCodeEnhanceYourCalm, "calm")
	r := NewFrameReader(bytesReader(b), 4096, 1024)
	next := func() http2.Frame {
		t.Helper()
		f, _, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	if f := next().(*http2.DataFrame); f.StreamID != 1 || string(f.Data()) != "body" || !f.StreamEnded() {
		t.Fatalf("DATA %v", f)
	}
	if f := next().(*http2.RSTStreamFrame); f.StreamID != 3 || f.ErrCode != http2.ErrCodeCancel {
		t.Fatalf("RST_STREAM %v", f)
	}
	if f := next().(*http2.WindowUpdateFrame); f.StreamID != 0 || f.Increment != 1<<20 {
		t.Fatalf("WINDOW_UPDATE %v", f)
	}
	if f := next().(*http2.SettingsFrame); !f.IsAck() {
		t.Fatalf("SETTINGS %v", f)
	}
	if f := next().(*http2.PingFrame); !f.IsAck() || f.Data != [8]byte{1, 2, 3, 4, 5, 6, 7, 8} {
		t.Fatalf("PING %v", f)
	}
	if f := next().(*http2.GoAwayFrame); f.LastStreamID != 7 || f.ErrCode != http2.ErrCodeEnhanceYourCalm || string(f.DebugData()) != "calm" {
		t.Fatalf("GOAWAY %v", f)
	}
}

func TestReadPreface(t *testing.T) {
	if err := ReadPreface(bytesReader([]byte(ClientPreface))); err != nil {
		t.Fatal(err)
	}
	if err := ReadPreface(bytesReader([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))); !errors.Is(err, ErrBadPreface) {
		t.Fatalf("err %v, want ErrBadPreface", err)
	}
	if err := ReadPreface(bytesReader([]byte("PRI"))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err %v, want the short read", err)
	}
}

func TestClassifyReadError(t *testing.T) {
	if code, ok := ConnErrorCode(ClassifyReadError(http2.ErrFrameTooLarge)); !ok || code != http2.ErrCodeFrameSize {
		t.Fatalf("frame too large: %v", code)
	}
	if err := ClassifyReadError(io.EOF); err != io.EOF {
		t.Fatalf("EOF became %v", err)
	}
	if code, ok := ConnErrorCode(ClassifyReadError(errors.New("odd"))); !ok || code != http2.ErrCodeProtocol {
		t.Fatalf("unknown error: %v", code)
	}
}

// Reading a HEADERS frame and assembling its block allocate nothing once
// the buffers have grown.
func TestFrameReaderAllocs(t *testing.T) {
	block := headerBlock(t, ":method", "GET", ":path", "/")
	frames := AppendHeaderBlock(nil, 1, block, true, 16384)
	frames = AppendHeaderBlock(frames, 3, block, true, 3)
	src := bytes.NewReader(nil)
	r := NewFrameReader(src, 4096, 1024)
	allocs := testing.AllocsPerRun(100, func() {
		src.Reset(frames)
		for range 2 {
			if _, hb, err := r.Next(); err != nil || hb == nil {
				t.Fatal(hb, err)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per two header blocks", allocs)
	}
}
