package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/omnirelay/omnirelay/internal/dataplane/cluster"
	"github.com/omnirelay/omnirelay/internal/dataplane/lb"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/dataplane/upstream"
)

// ErrUnknownCluster is returned for a call-out naming no cluster of the
// running configuration; proxy_http_call reports it to the guest as
// BadArgument before any I/O, as Envoy does.
var ErrUnknownCluster = errors.New("no cluster of that name")

// ClusterCaller sends proxy_http_call call-outs through the proxy's
// clusters: the plugin names a cluster, and the call goes through that
// cluster's load balancer, health and outlier state, circuit breaker,
// connection pools and upstream TLS, exactly as a routed request would
// (without retries: the plugin decides what a failure means).
//
// There is deliberately no host:port fallback in the proxy: a plugin may
// reach only what the operator declared as a cluster.
type ClusterCaller struct {
	// Cluster returns the named cluster of the running config version, or
	// nil. It is called once per call-out, from the stream's goroutine.
	Cluster func(name string) *cluster.Cluster
}

// Known reports whether name is a cluster (Options.KnownUpstream).
func (c *ClusterCaller) Known(name string) bool { return c.Cluster(name) != nil }

// Metadata returns the named cluster's metadata (Options.ClusterMetadata).
func (c *ClusterCaller) Metadata(name string) *corev3.Metadata {
	if cl := c.Cluster(name); cl != nil {
		return cl.Metadata()
	}
	return nil
}

// Call implements HTTPCaller.
func (c *ClusterCaller) Call(ctx context.Context, req HTTPCallRequest) (HTTPCallResponse, error) {
	cl := c.Cluster(req.Upstream)
	if cl == nil {
		return HTTPCallResponse{}, fmt.Errorf("http call to %q: %w", req.Upstream, ErrUnknownCluster)
	}
	var mr message.Request
	mr.ProtoMajor, mr.ProtoMinor = 1, 1
	for _, f := range req.Headers {
		switch f.Name {
		case ":method":
			mr.SetMethod(f.Value)
		case ":path":
			mr.SetPath(f.Value)
		case ":authority":
			mr.SetAuthority(f.Value)
		case ":scheme":
			mr.SetScheme(f.Value)
		default:
			if len(f.Name) > 0 && f.Name[0] != ':' {
				mr.Header.Add(f.Name, f.Value)
			}
		}
	}
	if len(mr.Method) == 0 || len(mr.Path) == 0 {
		return HTTPCallResponse{}, fmt.Errorf("http call to %q: :method and :path are required", req.Upstream)
	}
	if len(mr.Authority) == 0 {
		mr.SetAuthority(req.Upstream)
	}
	if len(mr.Scheme) == 0 {
		mr.SetScheme("http")
	}
	for _, f := range req.Trailers {
		mr.Trailer.Add(f.Name, f.Value)
	}
	if len(req.Body) > 0 {
		mr.Body = bytes.NewReader(req.Body)
	}
	mr.ContentLength = int64(len(req.Body))

	var dl time.Time
	if req.Timeout > 0 {
		dl = time.Now().Add(req.Timeout)
	}
	if d, ok := ctx.Deadline(); ok && (dl.IsZero() || d.Before(dl)) {
		dl = d
	}
	ep := cl.Pick(&lb.Context{})
	if ep == nil {
		return HTTPCallResponse{}, fmt.Errorf("http call to cluster %q: no healthy upstream", req.Upstream)
	}
	if !cl.Breaker.TryAcquireRequest() {
		cl.Stats.Overflow("requests")
		return HTTPCallResponse{}, fmt.Errorf("http call to cluster %q: %w", req.Upstream, upstream.ErrOverflow)
	}
	defer cl.Breaker.ReleaseRequest()
	ep.Active.Add(1)
	defer ep.Active.Add(-1)
	ep.Total.Add(1)

	var resp message.Response
	err := cl.Transport(false).RoundTrip(ctx, ep, &mr, &resp, upstream.Deadlines{Head: dl, Total: dl})
	if err != nil {
		cl.ReportFailure(ep, upstream.FailureOf(err))
		return HTTPCallResponse{}, fmt.Errorf("http call to cluster %q host %s: %w", req.Upstream, ep.Address, err)
	}
	defer func() {
		if resp.Close != nil {
			resp.Close()
		}
	}()
	cl.Stats.Response(resp.Status)
	cl.ReportStatus(ep, resp.Status)
	out := HTTPCallResponse{}
	if resp.Body != nil {
		if out.Body, err = io.ReadAll(io.LimitReader(resp.Body, maxCallBody)); err != nil {
			return HTTPCallResponse{}, fmt.Errorf("http call to cluster %q: read body: %w", req.Upstream, err)
		}
	}
	// Copy out: the response's storage goes back to the pool with Close.
	out.Headers = append(out.Headers, HeaderField{":status", strconv.Itoa(resp.Status)})
	for i := 0; i < resp.Header.Len(); i++ {
		f := resp.Header.At(i)
		out.Headers = append(out.Headers, HeaderField{string(f.Name), string(f.Value)})
	}
	for i := 0; i < resp.Trailer.Len(); i++ {
		f := resp.Trailer.At(i)
		out.Trailers = append(out.Trailers, HeaderField{string(f.Name), string(f.Value)})
	}
	return out, nil
}
