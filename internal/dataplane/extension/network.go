package extension

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
)

// NetworkPlugin is implemented by plugins that can also filter TCP
// connections (Proxy-Wasm network filters). The same package, config and
// cache entry serve HTTP and TCP listeners; a runtime whose plugins cannot
// filter connections simply does not implement it, and a tcp listener
// naming one is refused at build.
type NetworkPlugin interface {
	Plugin
	// NewConnection starts a connection's context, on the connection's
	// goroutine, with the watchdog deadline in ctx. Stop closes the
	// connection.
	NewConnection(ctx context.Context, d filter.Downstream) (Conn, Action, error)
}

// Conn is one connection's context in a network plugin. The caller makes
// one call at a time (it serialises the two directions).
type Conn interface {
	// Data shows bytes read from one side (fromDownstream: the client's)
	// and returns the bytes to forward; eos: that side ended. Stop closes
	// the connection.
	Data(ctx context.Context, b []byte, fromDownstream, eos bool) ([]byte, Action, error)
	// Close ends the context and gives back what it holds.
	Close()
}

// NetworkFilter is a configured extension on a TCP listener's chain: the
// same typed config as the HTTP filter (omnirelay.extensions.v1.Extension;
// canary and fail_status do not apply), the same watchdog and policies. A
// failed call under fail_open takes the extension out of the connection
// (bytes then pass unchanged); under fail_closed it closes the connection;
// reload replaces the plugin and applies the fallback meanwhile.
type NetworkFilter struct {
	name     string
	listener string
	policy   Policy
	fallback Policy
	watchdog *Watchdog
	main     *entry
}

// BuildNetwork builds the network filter of an extension for a tcp
// listener. Errors name the extension and the reason, as Build's do.
func (f *Factory) BuildNetwork(cfg *anypb.Any, listener string) (*NetworkFilter, error) {
	var pb extv1.Extension
	if err := unmarshal(cfg, &pb); err != nil {
		return nil, fmt.Errorf("extension: %w", err)
	}
	name := pb.GetName()
	if name == "" {
		return nil, errors.New("extension: name: empty")
	}
	if pb.GetCanary() != nil {
		return nil, fmt.Errorf("extension %q: canary is not supported on tcp listeners", name)
	}
	n := &NetworkFilter{name: name, listener: listener}
	var err error
	if n.policy, err = policyOf(pb.GetPolicy()); err != nil {
		return nil, fmt.Errorf("extension %q: policy: %w", name, err)
	}
	n.fallback = FailClosed
	if n.policy == Reload {
		if n.fallback, err = policyOf(pb.GetFallback()); err != nil || n.fallback == Reload {
			return nil, fmt.Errorf("extension %q: fallback: want fail_open or fail_closed, got %v", name, pb.GetFallback())
		}
	}
	d := pb.GetDeadline().AsDuration()
	if !pb.GetDeadline().IsValid() || d <= 0 {
		return nil, fmt.Errorf("extension %q: deadline: want > 0, got %v", name, pb.GetDeadline())
	}
	if n.main, err = f.load(name, pb.GetPackage(), pb.GetConfig(), vmOf(pb.GetWasm())); err != nil {
		return nil, err
	}
	if _, ok := n.main.cur.Load().plugin.(NetworkPlugin); !ok {
		f.unref([]*entry{n.main})
		return nil, fmt.Errorf("extension %q: the %s runtime cannot filter tcp connections", name, n.main.kind)
	}
	n.watchdog = NewWatchdog(name, n.main.kind, d, f.opt.Metrics, f.opt.Log)
	runtime.AddCleanup(n, f.unref, []*entry{n.main})
	return n, nil
}

// NetConn is one connection's state under a NetworkFilter. Its methods
// serialise the two directions.
type NetConn struct {
	n    *NetworkFilter
	in   *instance
	mu   sync.Mutex
	conn Conn
	skip bool // fail_open took the extension out of the connection
	// ctx is the calls' context, reused call after call as the HTTP
	// filter's is per stream (see callCtx): a context.WithTimeout per read
	// cost four allocations and a timer.
	ctx *callCtx
}

// NewConn starts a connection: nil (and no error) when the extension is
// skipped for it under fail_open; an error closes the connection.
func (n *NetworkFilter) NewConn(ctx context.Context, d filter.Downstream) (*NetConn, error) {
	in := n.main.cur.Load()
	if in.broken.Load() || !in.acquire() {
		return nil, n.failed(n.fallback, errors.New("extension is reloading"))
	}
	cc := &callCtx{}
	conn, act, o, err := n.watchdog.newConn(in, cc, ctx, d)
	if !cc.release() {
		cc = &callCtx{}
	}
	if o != OutcomeOK {
		if conn != nil {
			conn.Close()
		}
		cc.detach()
		in.release()
		return nil, n.failed(n.onFailure(in), err)
	}
	c := &NetConn{n: n, in: in, conn: conn, ctx: cc}
	if act == Stop {
		c.Close()
		return nil, fmt.Errorf("extension %q closed the connection", n.name)
	}
	return c, nil
}

// UpstreamConn is implemented by Conns that want the connection's upstream
// (cluster name and address) once it is connected, before the first Data.
type UpstreamConn interface {
	Upstream(cluster string, addr net.Addr)
}

// Upstream tells the connection's plugin its upstream (UpstreamConn).
func (c *NetConn) Upstream(cluster string, addr net.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if u, ok := c.conn.(UpstreamConn); ok && !c.skip {
		u.Upstream(cluster, addr)
	}
}

// Data filters one read; see Conn.Data.
func (c *NetConn) Data(b []byte, fromDownstream, eos bool) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.skip || c.conn == nil {
		return b, nil
	}
	out, act, o, err := c.n.watchdog.data(c.in, c.ctx, c.conn, b, fromDownstream, eos)
	if !c.ctx.release() {
		c.ctx = &callCtx{}
	}
	if o != OutcomeOK {
		c.skip = true
		if c.n.failed(c.n.onFailure(c.in), err) != nil {
			return nil, fmt.Errorf("extension %q: %w", c.n.name, err)
		}
		return b, nil
	}
	if act == Stop {
		return nil, fmt.Errorf("extension %q closed the connection", c.n.name)
	}
	return out, nil
}

// Close ends the connection's context.
func (c *NetConn) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		func() {
			defer func() {
				if r := recover(); r != nil {
					c.n.watchdog.count(OutcomePanic, fmt.Errorf("connection close panicked: %v", r))
				}
			}()
			c.conn.Close()
		}()
		c.conn = nil
		c.ctx.detach()
		c.in.release()
	}
}

func (n *NetworkFilter) onFailure(in *instance) Policy {
	if n.policy == Reload {
		n.main.reload(in)
		return n.fallback
	}
	return n.policy
}

// failed turns a policy into the connection's fate: nil lets it through
// unfiltered (fail_open), an error closes it.
func (n *NetworkFilter) failed(p Policy, err error) error {
	if p == FailOpen {
		return nil
	}
	return fmt.Errorf("extension %q failed (fail_closed): %w", n.name, err)
}

// newConn and data run one plugin call under the watchdog, as onRequest
// does: the deadline in c, panics recovered, the outcome counted. A
// connection's context is the parent of NewConnection's call; Data calls
// have none (a read is bounded by the deadline alone).
func (w *Watchdog) newConn(in *instance, c *callCtx, parent context.Context, d filter.Downstream) (conn Conn, a Action, o Outcome, err error) {
	c.begin(parent, w.epoch, w.deadline)
	defer func() { o, err = w.settle(c, in.caps.KeepsDeadline, recover(), err) }()
	conn, a, err = in.plugin.(NetworkPlugin).NewConnection(c, d)
	return conn, a, OutcomeOK, err
}

func (w *Watchdog) data(in *instance, c *callCtx, conn Conn, b []byte, fromDownstream, eos bool) (out []byte, a Action, o Outcome, err error) {
	c.begin(context.Background(), w.epoch, w.deadline)
	defer func() { o, err = w.settle(c, in.caps.KeepsDeadline, recover(), err) }()
	out, a, err = conn.Data(c, b, fromDownstream, eos)
	return out, a, OutcomeOK, err
}
