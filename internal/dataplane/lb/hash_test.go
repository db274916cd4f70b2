package lb

import "testing"

func TestXXHash64(t *testing.T) {
	// Reference values from github.com/cespare/xxhash/v2 (Sum64 and
	// NewWithSeed(1)), which follows the xxHash specification.
	tests := []struct {
		name  string
		in    string
		seed0 uint64
		seed1 uint64
	}{
		{name: "empty", in: "", seed0: 0xef46db3751d8e999, seed1: 0xd5afba1336a3be4b},
		{name: "one byte", in: "a", seed0: 0xd24ec4f1a98c6e5b, seed1: 0xdec2bc81c3cd46c6},
		{name: "three bytes", in: "abc", seed0: 0x44bc2cf5ad770999, seed1: 0xbea9ca8199328908},
		{name: "ring key", in: "127.0.0.1:8080_0", seed0: 0xf673a43b9624fa24, seed1: 0xb435c554178c1df2},
		{name: "address", in: "10.0.0.1:80", seed0: 0x11facba8043b217, seed1: 0xa456919bcbffaa92},
		{name: "over 32 bytes", in: "Nobody inspects the spammish repetition", seed0: 0xfbcea83c8a378bf1, seed1: 0x43f425448d954db6},
		{name: "42 bytes", in: "0123456789abcdef0123456789abcdef0123456789", seed0: 0xa76190c3acf08a1c, seed1: 0x2b8d7720869b31a6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := HashBytes([]byte(tt.in)); got != tt.seed0 {
				t.Errorf("HashBytes(%q) = %#x, want %#x", tt.in, got, tt.seed0)
			}
			if got := xxh64([]byte(tt.in), 1); got != tt.seed1 {
				t.Errorf("xxh64(%q, 1) = %#x, want %#x", tt.in, got, tt.seed1)
			}
		})
	}
}

func BenchmarkHashBytes(b *testing.B) {
	key := []byte("user-7f3a9c2e-4b1d-4e8a-9c3f-2d1e0b9a8c7d")
	b.ReportAllocs()
	b.SetBytes(int64(len(key)))
	for b.Loop() {
		_ = HashBytes(key)
	}
}
