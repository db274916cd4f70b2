package listener

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
)

type dialUpstream string

func (a dialUpstream) Connect(ctx context.Context) (net.Conn, func(), error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", string(a))
	return c, func() {}, err
}

func echoServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// proxyConn serves one connection through a TCPProxy with nf and returns
// the client's end.
func proxyConn(t testing.TB, echo string, nf NetworkFilter) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := (&TCPProxy{Cluster: "echo", Clusters: func(string) Upstream { return dialUpstream(echo) }}).Init()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		p.Serve(context.Background(), c, &filter.Downstream{}, nf)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); <-done })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// upper upper-cases what goes upstream, refuses "bad", and records Close.
type upper struct{ closed chan struct{} }

func (u *upper) NewConn(context.Context, net.Conn, *filter.Downstream) (ConnFilter, error) {
	return u, nil
}

func (u *upper) Data(b []byte, fromDownstream, _ bool) ([]byte, error) {
	if fromDownstream && bytes.Contains(b, []byte("bad")) {
		return nil, errors.New("refused")
	}
	if fromDownstream {
		return bytes.ToUpper(b), nil
	}
	return b, nil
}

func (u *upper) Close() { close(u.closed) }

type refuse struct{}

func (refuse) NewConn(context.Context, net.Conn, *filter.Downstream) (ConnFilter, error) {
	return nil, errors.New("no")
}

func TestTCPProxyNetworkFilter(t *testing.T) {
	echo := echoServer(t)
	tests := []struct {
		name       string
		nf         NetworkFilter
		send, want string
		closed     bool
	}{
		{name: "no filter", send: "hello\n", want: "hello\n"},
		{name: "rewrites", nf: &upper{closed: make(chan struct{})}, send: "hello\n", want: "HELLO\n"},
		{name: "filter error closes", nf: &upper{closed: make(chan struct{})}, send: "bad\n", closed: true},
		{name: "NewConn error refuses", nf: refuse{}, send: "hello\n", closed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := proxyConn(t, echo, tt.nf)
			if _, err := io.WriteString(c, tt.send); err != nil && !tt.closed {
				t.Fatal(err)
			}
			got, err := bufio.NewReader(c).ReadString('\n')
			if tt.closed {
				if got != "" || err == nil {
					t.Fatalf("got %q, %v: want the connection closed", got, err)
				}
			} else if err != nil || got != tt.want {
				t.Fatalf("got %q, %v: want %q", got, err, tt.want)
			}
			c.Close()
			if u, ok := tt.nf.(*upper); ok {
				select {
				case <-u.closed:
				case <-time.After(10 * time.Second):
					t.Fatal("ConnFilter.Close not called")
				}
			}
		})
	}
}

// passThrough filters nothing: the benchmark measures the hook's own cost.
type passThrough struct{}

func (passThrough) NewConn(context.Context, net.Conn, *filter.Downstream) (ConnFilter, error) {
	return passThrough{}, nil
}
func (passThrough) Data(b []byte, _, _ bool) ([]byte, error) { return b, nil }
func (passThrough) Close()                                   {}

// BenchmarkTCPProxyEcho sends 4 KiB round trips through the TCP proxy,
// with no network filter and with a pass-through one.
func BenchmarkTCPProxyEcho(b *testing.B) {
	echo := echoServer(b)
	for _, bc := range []struct {
		name string
		nf   NetworkFilter
	}{{"none", nil}, {"pass-through", passThrough{}}} {
		b.Run(bc.name, func(b *testing.B) {
			c := proxyConn(b, echo, bc.nf)
			_ = c.SetDeadline(time.Time{})
			msg := bytes.Repeat([]byte("x"), 4096)
			buf := make([]byte, len(msg))
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
