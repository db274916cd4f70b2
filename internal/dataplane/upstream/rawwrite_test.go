package upstream

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// pair returns a dialled client connection and the accepted server side.
func pair(t *testing.T) (client net.Conn, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestRawWriterWaitsForResponse(t *testing.T) {
	client, server := pair(t)
	w := newRawWriter(client)
	if w == nil {
		t.Fatal("no raw writer for a *net.TCPConn")
	}
	const delay = 50 * time.Millisecond
	go func() {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(server, buf); err != nil {
			return
		}
		time.Sleep(delay)
		_, _ = server.Write([]byte("world"))
	}()
	start := time.Now()
	if err := w.writeAndAwait(client, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < delay {
		t.Fatalf("writeAndAwait returned after %v, before the response (sent after %v) could be read", waited, delay)
	}
	// The response is there now: a read with a deadline in the past would
	// fail if it had to wait.
	buf := make([]byte, 5)
	_ = client.SetReadDeadline(time.Now().Add(time.Millisecond))
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "world" {
		t.Fatalf("read after writeAndAwait: %q, %v", buf, err)
	}
}

// An instant answer (the race a plain Write followed by a RawConn wait would
// lose: the response arriving before the wait starts) never hangs.
func TestRawWriterInstantResponses(t *testing.T) {
	client, server := pair(t)
	w := newRawWriter(client)
	go func() { _, _ = io.Copy(server, server) }()
	msg := []byte("0123456789abcdef")
	buf := make([]byte, len(msg))
	done := make(chan error, 1)
	go func() {
		for i := 0; i < 20000; i++ {
			if err := w.writeAndAwait(client, msg); err != nil {
				done <- err
				return
			}
			if _, err := io.ReadFull(client, buf); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("a round trip hung: a response's wake-up was lost")
	}
}

// A write larger than the socket buffers completes through the Write
// fallback, byte for byte.
func TestRawWriterPartialWrite(t *testing.T) {
	client, server := pair(t)
	w := newRawWriter(client)
	big := bytes.Repeat([]byte("0123456789"), 1<<20) // 10 MiB
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(server, int64(len(big))))
		_, _ = server.Write([]byte("ok"))
		got <- b
	}()
	if err := w.writeAndAwait(client, big); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("server got %d bytes, want %d identical", len(b), len(big))
	}
}

func TestRawWriterDeadlineWhileWaiting(t *testing.T) {
	client, server := pair(t)
	w := newRawWriter(client)
	go func() { _, _ = io.Copy(io.Discard, server) }() // never answers
	_ = client.SetDeadline(time.Now().Add(50 * time.Millisecond))
	if err := w.writeAndAwait(client, []byte("ping")); err != nil {
		t.Fatalf("the write succeeded; a deadline while waiting is for the read to report: %v", err)
	}
	if _, err := client.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after the deadline: %v, want deadline exceeded", err)
	}
	// A deadline already past: nothing is written, the error is the write's.
	if err := w.writeAndAwait(client, []byte("ping")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write with a past deadline: %v, want deadline exceeded", err)
	}
}

func TestRawWriterPeerClosed(t *testing.T) {
	client, server := pair(t)
	w := newRawWriter(client)
	server.Close()
	time.Sleep(20 * time.Millisecond) // let the FIN arrive
	// The first write after a FIN succeeds locally and draws an RST; the wait
	// must end (readable: EOF/reset), not hang.
	done := make(chan error, 1)
	go func() {
		err := w.writeAndAwait(client, []byte("GET / HTTP/1.1\r\n\r\n"))
		if err == nil {
			_, err = client.Read(make([]byte, 1))
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("read from a closed peer succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("writeAndAwait hung on a closed peer")
	}
}

func TestRawWriterOnlyPlainTCP(t *testing.T) {
	client, _ := pair(t)
	if newRawWriter(struct{ net.Conn }{client}) != nil {
		t.Fatal("a wrapped connection must not be written around its Write")
	}
}

func BenchmarkRawWriterRoundTrip(b *testing.B) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = io.Copy(c, c)
		}
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	w := newRawWriter(client)
	msg := []byte("0123456789abcdef")
	buf := make([]byte, len(msg))
	for _, raw := range []bool{false, true} {
		name := "Write"
		if raw {
			name = "RawWriter"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if raw {
					err = w.writeAndAwait(client, msg)
				} else {
					_, err = client.Write(msg)
				}
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(client, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
