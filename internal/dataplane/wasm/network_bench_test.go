package wasm

import (
	"bytes"
	"context"
	"testing"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
)

// BenchmarkNetworkData is the cost of one proxy_on_downstream_data call
// of the tcp-guard example on a 4 KiB chunk (it reads the chunk and scans
// it; no rewrite), beside an empty ConnFilter-free baseline of copying the
// chunk.
func BenchmarkNetworkData(b *testing.B) {
	r := newRuntime(b, Options{})
	p := load(b, r, "examples/extensions/wasm/tcp-guard", "deny: forbidden")
	ctx := context.Background()
	chunk := bytes.Repeat([]byte("x"), 4096)
	b.Run("tcp-guard", func(b *testing.B) {
		c, _, err := p.NewConnection(ctx, filter.Downstream{})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		b.ReportAllocs()
		b.SetBytes(int64(len(chunk)))
		for range b.N {
			if _, _, err := c.Data(ctx, chunk, true, false); err != nil {
				b.Fatal(err)
			}
		}
	})
}
