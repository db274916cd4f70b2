package wasm

import (
	"bytes"
	"testing"
)

func TestHeaderMapRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		pairs []pair
	}{
		{name: "empty"},
		{name: "one", pairs: []pair{{[]byte("a"), []byte("1")}}},
		{name: "empty value and pseudo", pairs: []pair{{[]byte(":path"), []byte("/")}, {[]byte("x"), nil}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := appendMap(nil, tt.pairs)
			if len(b) != mapSize(tt.pairs) {
				t.Errorf("mapSize = %d, len = %d", mapSize(tt.pairs), len(b))
			}
			got, err := parseMap(b, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.pairs) {
				t.Fatalf("got %d pairs, want %d", len(got), len(tt.pairs))
			}
			for i := range got {
				if !bytes.Equal(got[i].Name, tt.pairs[i].Name) || !bytes.Equal(got[i].Value, tt.pairs[i].Value) {
					t.Errorf("pair %d = %q:%q", i, got[i].Name, got[i].Value)
				}
			}
		})
	}
}

func TestHeaderMapMalformed(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{name: "short count", in: []byte{1, 0}},
		{name: "count too large", in: []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}},
		{name: "lengths overrun", in: append(appendMap(nil, nil)[:0], 1, 0, 0, 0, 9, 0, 0, 0, 9, 0, 0, 0, 'a', 0)},
		{name: "missing NUL", in: []byte{1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 'a', 'x', 'b', 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseMap(tt.in, nil); err == nil {
				t.Error("parsed a malformed map")
			}
		})
	}
}

// FuzzParseMap: a guest controls these bytes entirely; parsing must never
// panic, and what parses must serialize back to the same bytes (modulo
// trailing data).
func FuzzParseMap(f *testing.F) {
	f.Add(appendMap(nil, []pair{{[]byte(":status"), []byte("200")}, {[]byte("x"), []byte("y")}}))
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := parseMap(b, nil)
		if err != nil {
			return
		}
		out := appendMap(nil, ps)
		if len(b) > 0 && !bytes.Equal(out, b[:len(out)]) {
			t.Fatalf("round trip: %x -> %x", b, out)
		}
	})
}
