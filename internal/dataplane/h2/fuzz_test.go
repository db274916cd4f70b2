package h2

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/shared/http2core"
)

// FuzzServerFrames feeds arbitrary bytes after the client preface to a
// Server: it must neither panic nor hang (ServeConn returns once the client
// side is closed). Seeds are under testdata/fuzz/FuzzServerFrames.
func FuzzServerFrames(f *testing.F) {
	srv := &Server{MaxConcurrentStreams: 16, StreamWindow: 1 << 16}
	f.Fuzz(func(t *testing.T, data []byte) {
		cs, ss := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ServeConn(context.Background(), ss, testHandler)
		}()
		go func() { _, _ = io.Copy(io.Discard, cs) }()
		_ = cs.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, _ = cs.Write([]byte(http2core.ClientPreface))
		_, _ = cs.Write(data)
		cs.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("ServeConn did not return after the client closed")
		}
	})
}
