package wasm

import (
	"context"
	"fmt"
	"net"

	"github.com/tetratelabs/wazero/api"

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// Proxy-Wasm network (L4) filters: a TCP listener's connection gets a
// context on an instance from the plugin's pool, as an HTTP stream does,
// for its whole life. The ABI's callbacks:
//
//	proxy_on_new_connection(ctx) -> action
//	proxy_on_downstream_data(ctx, size, end_of_stream) -> action
//	proxy_on_upstream_data(ctx, size, end_of_stream) -> action
//	proxy_on_downstream_connection_close(ctx, peer_type)
//	proxy_on_upstream_connection_close(ctx, peer_type)
//
// and the data in buffers 2 (downstream data) and 3 (upstream data), read
// and replaced with proxy_get_buffer_bytes / proxy_set_buffer_bytes. The
// context reuses streamCtx: the two data buffers are its request and
// response bodies, and its stream is a synthetic one carrying the
// connection's addresses and peer identity (properties), with no headers.
// A guest that pauses holds the bytes back; they go with the next ones (or
// at the end of the stream). proxy_close_stream closes the connection.

// Buffer types of the network callbacks.
const (
	bufDownstreamData = 2
	bufUpstreamData   = 3
)

// Peer types of the close callbacks.
const peerRemote = 2

var (
	_ extension.NetworkPlugin = (*Plugin)(nil)
	_ extension.Conn          = (*netConn)(nil)
)

// netConn is one connection's context.
type netConn struct {
	p  *Plugin
	st *streamCtx
	fn netFuncs

	held   [2][]byte // paused bytes per direction (0: downstream)
	closed [2]bool   // close callbacks made
}

var _ extension.UpstreamConn = (*netConn)(nil)

// Upstream implements extension.UpstreamConn: the cluster_name,
// upstream.address and cluster_metadata properties.
func (c *netConn) Upstream(cluster string, addr net.Addr) {
	c.st.s.UpstreamCluster = cluster
	if addr != nil {
		c.st.s.UpstreamHost = addr.String()
	}
}

type netFuncs struct {
	newConn, downData, upData, downClose, upClose api.Function
}

// NewConnection implements extension.NetworkPlugin.
func (p *Plugin) NewConnection(ctx context.Context, d filter.Downstream) (extension.Conn, extension.Action, error) {
	in, err := p.get(ctx)
	if err != nil {
		return nil, Continue, fmt.Errorf("wasm plugin %q: %w", p.name, err)
	}
	f := func(name string) api.Function { return in.mod.ExportedFunction(name) }
	c := &netConn{p: p, fn: netFuncs{
		newConn:   f("proxy_on_new_connection"),
		downData:  f("proxy_on_downstream_data"),
		upData:    f("proxy_on_upstream_data"),
		downClose: f("proxy_on_downstream_connection_close"),
		upClose:   f("proxy_on_upstream_connection_close"),
	}}
	s := &filter.Stream{Req: &message.Request{}, Downstream: d}
	s.Ctx = context.Background()
	st := &streamCtx{in: in, s: s, id: in.newID(), wants: wantsAll}
	c.st = st
	in.st = st
	in.effective = st.id
	if _, err := in.call(ctx, in.fn.contextCreate, "proxy_on_context_create", uint64(st.id), rootID); err != nil {
		c.Close()
		return nil, Continue, p.fail(err)
	}
	act, err := in.call(ctx, c.fn.newConn, "proxy_on_new_connection", uint64(st.id))
	if err != nil {
		c.Close()
		return nil, Continue, p.fail(err)
	}
	if st.local {
		return c, Stop, nil
	}
	_ = act // a pause here holds nothing: no byte has arrived yet
	return c, Continue, nil
}

// Data implements extension.Conn.
func (c *netConn) Data(ctx context.Context, b []byte, fromDownstream, eos bool) ([]byte, extension.Action, error) {
	st, in := c.st, c.st.in
	dir, fn, name, buf := 1, c.fn.upData, "proxy_on_upstream_data", &st.respBody
	if fromDownstream {
		dir, fn, name, buf = 0, c.fn.downData, "proxy_on_downstream_data", &st.reqBody
	}
	// The guest sees what it held back plus the new bytes. Without held
	// bytes, b itself: proxy_set_buffer_bytes replaces the slice, never
	// writes into it, and b is valid for the call.
	*buf = b
	if len(c.held[dir]) > 0 {
		*buf = append(c.held[dir], b...)
		c.held[dir] = nil
	}
	in.effective = st.id
	st.resumed = false
	act, err := in.call(ctx, fn, name, uint64(st.id), uint64(len(*buf)), b2u(eos))
	if err == nil && act == guestPause && st.pending > 0 {
		// Paused for a call-out: wait for it (within the deadline).
		_, err = st.afterCallback(ctx, act)
	}
	if err != nil {
		return nil, Continue, c.p.fail(err)
	}
	if st.local {
		return nil, Stop, nil
	}
	out := *buf
	*buf = nil
	if act == guestPause && !eos && !st.resumed {
		c.held[dir] = append([]byte(nil), out...) // b's buffer is the caller's to reuse
		return nil, Continue, nil
	}
	if eos && !c.closed[dir] {
		c.closed[dir] = true
		cl, cname := c.fn.upClose, "proxy_on_upstream_connection_close"
		if fromDownstream {
			cl, cname = c.fn.downClose, "proxy_on_downstream_connection_close"
		}
		if _, err := in.call(ctx, cl, cname, uint64(st.id), peerRemote); err != nil {
			return nil, Continue, c.p.fail(err)
		}
	}
	return out, Continue, nil
}

// Close implements extension.Conn: proxy_on_done, proxy_on_log,
// proxy_on_delete, and the instance goes back to the pool (or is closed if
// it broke).
func (c *netConn) Close() {
	st, in := c.st, c.st.in
	if in.broken == nil {
		ctx, cancel := context.WithTimeout(context.Background(), c.p.rt.opts.CompleteTimeout)
		id := uint64(st.id)
		in.effective = st.id
		if _, err := in.call(ctx, in.fn.done, "proxy_on_done", id); err == nil {
			if _, err := in.call(ctx, in.fn.log, "proxy_on_log", id); err == nil {
				_, _ = in.call(ctx, in.fn.del, "proxy_on_delete", id)
			}
		}
		cancel()
	}
	c.p.put(in)
}
