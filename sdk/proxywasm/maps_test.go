package proxywasm

import (
	"reflect"
	"testing"
)

func TestMapRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		hs   [][2]string
	}{
		{name: "empty"},
		{name: "pseudo and regular", hs: [][2]string{{":path", "/"}, {"x-a", "1"}}},
		{name: "empty value", hs: [][2]string{{"x-empty", ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decodeMap(encodeMap(tt.hs))
			if len(got) == 0 && len(tt.hs) == 0 {
				return
			}
			if !reflect.DeepEqual(got, tt.hs) {
				t.Errorf("round trip = %q, want %q", got, tt.hs)
			}
		})
	}
}

// FuzzDecodeMap: the host's bytes never make the guest panic.
func FuzzDecodeMap(f *testing.F) {
	f.Add(encodeMap([][2]string{{":status", "200"}}))
	f.Add([]byte{0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = decodeMap(b)
	})
}
