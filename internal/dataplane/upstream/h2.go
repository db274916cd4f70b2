package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
	"github.com/omnirelay/omnirelay/internal/dataplane/h2"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// H2Options configures the HTTP/2 transport.
type H2Options struct {
	Dial Dialer
	// TLS selects h2 over TLS (ALPN h2); nil means h2c with prior knowledge.
	TLS *tls.Config
}

// H2 multiplexes requests over HTTP/2 connections, one pool per endpoint
// address, on package h2's client: request and response stay
// message.Request/message.Response end to end, the request body streams
// concurrently with the response (gRPC bidi), and frames of many streams
// share write syscalls.
type H2 struct {
	c h2.Client
}

var _ Transport = (*H2)(nil)

// NewH2 returns an HTTP/2 transport (h2c when opt.TLS is nil).
func NewH2(opt H2Options) *H2 {
	dial := opt.Dial
	if dial == nil {
		dial = NewDialer(0)
	}
	h := &H2{}
	h.c.Dial = dial
	h.c.TLS = opt.TLS
	return h
}

// CloseIdle implements Transport.
func (h *H2) CloseIdle() { h.c.CloseIdle() }

// RoundTrip implements Transport.
func (h *H2) RoundTrip(ctx context.Context, ep *endpoint.Endpoint, req *message.Request, resp *message.Response, dl Deadlines) error {
	err := h.c.RoundTrip(ctx, ep.Address, req, resp, h2.Deadlines{Head: dl.Head, Total: dl.Total})
	if err != nil {
		return classifyH2Err(err)
	}
	return nil
}

// classifyH2Err maps package h2's errors onto this package's, which the
// router's retry and outlier decisions test for.
func classifyH2Err(err error) error {
	switch {
	case errors.Is(err, h2.ErrRequestBody):
		return fmt.Errorf("%w: %w", ErrRequestBody, err)
	case errors.Is(err, ErrConnect), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, h2.ErrTimeout):
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	case errors.Is(err, h2.ErrRefused):
		return fmt.Errorf("%w: %w", ErrRefused, err)
	case errors.Is(err, h2.ErrConnect):
		return fmt.Errorf("%w: %w", ErrConnect, err)
	}
	return fmt.Errorf("%w: %w", ErrReset, err)
}
