package http2core

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzFrameReader feeds arbitrary bytes, as frames, to a FrameReader and
// decodes every header block it assembles: it must not panic, must return
// only blocks within its limit on a client stream id, and must end with an
// error (the input runs out). Seeds are under testdata/fuzz/FuzzFrameReader.
func FuzzFrameReader(f *testing.F) {
	block := headerBlock(f, ":method", "POST", ":path", "/svc/Method", "content-type", "application/grpc")
	f.Add(AppendHeaderBlock(nil, 1, block, false, 16384))
	f.Add(AppendHeaderBlock(AppendSettings(nil, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}), 3, block, true, 7))
	f.Add(AppendData(AppendHeaderBlock(nil, 1, block, false, 2), 1, []byte("x"), true))
	const limit = 256
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewFrameReader(bytes.NewReader(in), 4096, limit)
		dec := NewDecoder(limit, func(hpack.HeaderField) {})
		p := DefaultPeerSettings()
		var w SendWindow
		w.Set(p.InitialWindow)
		for range len(in) + 1 { // every frame takes at least its 9-byte header
			f, hb, err := r.Next()
			if err != nil {
				if _, ok := errors.AsType[http2.StreamError](err); ok {
					continue
				}
				if err != io.EOF && err != io.ErrUnexpectedEOF {
					if _, ok := ConnErrorCode(ClassifyReadError(err)); !ok {
						t.Fatalf("unclassified error %T: %v", err, err)
					}
				}
				return
			}
			if hb != nil {
				if hb.StreamID == 0 || len(hb.Block) > limit {
					t.Fatalf("block on stream %d of %d bytes (limit %d)", hb.StreamID, len(hb.Block), limit)
				}
				if err := DecodeBlock(dec, hb.Block); err != nil {
					if _, ok := ConnErrorCode(err); !ok {
						t.Fatalf("decode error not a connection error: %v", err)
					}
					return
				}
				continue
			}
			if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
				err := p.Apply(sf, func(s http2.Setting, d int64) error {
					if !w.Grow(d) {
						return ErrStreamWindowOverflow
					}
					return nil
				})
				if err != nil {
					if _, ok := ConnErrorCode(err); !ok {
						t.Fatalf("settings error not a connection error: %v", err)
					}
					return
				}
				if p.MaxFrameSize < DefaultMaxFrameSize || p.MaxFrameSize > 1<<24-1 || p.InitialWindow > MaxWindow {
					t.Fatalf("invalid settings applied: %+v", p)
				}
			}
		}
		t.Fatal("the reader did not stop at the end of its input")
	})
}
