package listener

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/upstream"
)

// Upstream is what a TCP proxy needs from a cluster: a connection to one of
// its hosts (picked by its load balancer, within its circuit breaker).
type Upstream interface {
	Connect(ctx context.Context) (net.Conn, func(), error)
}

// TCPProxy forwards a connection's bytes to a cluster, both ways, with
// half-close and an idle timeout.
type TCPProxy struct {
	// Clusters resolves a cluster name in the current config version.
	Clusters func(name string) Upstream
	Cluster  string
	Weighted []WeightedTarget
	total    uint32
	// IdleTimeout closes the pair after no bytes flowed either way (default 1h).
	IdleTimeout time.Duration
	// MaxConnectAttempts tries other hosts on connect failure (default 1).
	MaxConnectAttempts int
	// Observe, when set, records the outcome (bytes each way, error).
	Observe func(cluster string, sent, received int64, err error)
	// AccessLogs each receive one record per connection, named by Listener
	// (fields in docs/config.md#access_log).
	AccessLogs []*slog.Logger
	Listener   string
}

// WeightedTarget is one cluster of a weighted TCP proxy.
type WeightedTarget struct {
	Cluster string
	Weight  uint32
}

// Init finishes the proxy after its fields are set.
func (p *TCPProxy) Init() *TCPProxy {
	p.total = 0
	for _, w := range p.Weighted {
		p.total += w.Weight
	}
	if p.IdleTimeout == 0 {
		p.IdleTimeout = time.Hour
	}
	if p.MaxConnectAttempts <= 0 {
		p.MaxConnectAttempts = 1
	}
	return p
}

func (p *TCPProxy) pick() string {
	if p.total == 0 {
		return p.Cluster
	}
	n := rand.Uint32N(p.total)
	for _, w := range p.Weighted {
		if n < w.Weight {
			return w.Cluster
		}
		n -= w.Weight
	}
	return p.Weighted[len(p.Weighted)-1].Cluster
}

// Serve proxies c until either side closes or the idle timeout fires. d is
// what the listener learnt about the connection; nf is the chain's network
// filter (netfilter.go), nil if none.
func (p *TCPProxy) Serve(ctx context.Context, c net.Conn, d *filter.Downstream, nf NetworkFilter) {
	start := time.Now()
	var cf ConnFilter
	if nf != nil {
		var err error
		if cf, err = nf.NewConn(ctx, c, d); err != nil {
			p.logAccess(start, c, d, "", "", "NF", 0, 0) // refused by a network filter
			return
		}
		if cf != nil {
			defer cf.Close()
		}
	}
	name := p.pick()
	up := p.Clusters(name)
	if up == nil {
		p.observe(name, 0, 0, errNoCluster)
		p.logAccess(start, c, d, name, "", "NC", 0, 0)
		return
	}
	var uc net.Conn
	var release func()
	var err error
	for i := 0; i < p.MaxConnectAttempts; i++ {
		uc, release, err = up.Connect(ctx)
		if err == nil {
			break
		}
	}
	if err != nil {
		p.observe(name, 0, 0, err)
		// Every way Connect fails (no host, overflow, dial, TLS) is logged
		// as a connect failure.
		p.logAccess(start, c, d, name, "", upstream.FailConnect.ResponseFlag(), 0, 0)
		return
	}
	defer release()
	defer uc.Close()
	var sent, recv int64
	if o, ok := cf.(UpstreamObserver); ok {
		o.Upstream(name, uc.RemoteAddr())
	}
	if cf != nil {
		sent, recv, err = pipeFiltered(c, uc, p.IdleTimeout, cf)
	} else {
		sent, recv, err = pipe(c, uc, p.IdleTimeout)
	}
	p.observe(name, sent, recv, err)
	p.logAccess(start, c, d, name, uc.RemoteAddr().String(), "", sent, recv)
}

// logAccess writes the connection's record; sent is what went upstream
// (bytes_received from downstream), recv what came back.
func (p *TCPProxy) logAccess(start time.Time, c net.Conn, d *filter.Downstream, cluster, host, flags string, sent, recv int64) {
	if len(p.AccessLogs) == 0 {
		return
	}
	attrs := [...]slog.Attr{
		slog.String("listener", d.Listener),
		slog.Time("start_time", start),
		slog.String("response_flags", flags),
		slog.Int64("bytes_received", sent),
		slog.Int64("bytes_sent", recv),
		slog.Int64("duration_us", time.Since(start).Microseconds()),
		slog.String("upstream_cluster", cluster),
		slog.String("upstream_host", host),
		slog.String("server_name", d.SNI),
		slog.String("downstream_remote", c.RemoteAddr().String()),
		slog.String("peer_identity", d.PeerIdentity),
	}
	for _, l := range p.AccessLogs {
		l.LogAttrs(context.Background(), slog.LevelInfo, "access", attrs[:]...)
	}
}

func (p *TCPProxy) observe(cluster string, sent, recv int64, err error) {
	if p.Observe != nil {
		p.Observe(cluster, sent, recv, err)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

const errNoCluster = errString("tcp proxy: cluster not found")

var pipeBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// pipe copies both ways. Each direction half-closes its destination when its
// source ends, so protocols that use half-close (TLS close_notify, HTTP/1.0
// request-then-read) keep working; the idle timeout is refreshed by traffic.
func pipe(down, up net.Conn, idle time.Duration) (sent, recv int64, err error) {
	var wg sync.WaitGroup
	var upErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		recv, upErr = copyIdle(down, up, idle)
		closeWrite(down)
	}()
	sent, err = copyIdle(up, down, idle)
	closeWrite(up)
	wg.Wait()
	if err == nil {
		err = upErr
	}
	return sent, recv, err
}

func copyIdle(dst, src net.Conn, idle time.Duration) (int64, error) {
	bp := pipeBufPool.Get().(*[]byte)
	defer pipeBufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		_ = src.SetReadDeadline(time.Now().Add(idle))
		m, err := src.Read(buf)
		if m > 0 {
			_ = dst.SetWriteDeadline(time.Now().Add(idle))
			if _, werr := dst.Write(buf[:m]); werr != nil {
				return n, werr
			}
			n += int64(m)
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			// The other direction's close ends this one too.
			_ = dst.SetReadDeadline(time.Now())
			return n, err
		}
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}
