package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/omnirelay/omnirelay/internal/dataplane/upstream"
)

// Bodies are streamed to proxy_on_request_body / proxy_on_response_body as
// Envoy does: each chunk as it is read (at most bodyChunk bytes), with
// end_of_stream on the last, and the body size the guest sees is what is
// buffered. A guest that returns Continue lets the buffered bytes go on; one
// that returns Pause (StopIterationAndBuffer) with no call-out pending has
// them kept, and sees them again with the next chunk, up to
// Options.MaxBodyBytes (then a request is answered 413 and a response 500,
// Envoy's answers); one that pauses with call-outs pending is waited for.
//
// The chunks are read by the filter's phase (OnRequest, OnResponse) until
// the guest first lets bytes go before the end: the rest is streamed from
// the body's reader (the upstream transport's goroutine for a request, the
// downstream codec for a response), serialised with the stream's other
// calls by st.tr.mu. Only the first chunk's callback runs under the
// extension's call deadline: the others wait for the network in between,
// so each gets the completion deadline (Options.CompleteTimeout) of its own.
// Once the body streams, a local response can no longer replace the
// request (it is on its way upstream) and fails the body instead.

// bodyChunk is the most a single read hands the guest.
const bodyChunk = 64 << 10

// bodyPump feeds one body to the guest.
type bodyPump struct {
	st     *streamCtx
	resp   bool
	src    io.Reader
	left   int64 // bytes still to come when the length is known; -1 if not
	chunk  []byte
	out    []byte // let go by the guest, not yet read
	eos    bool
	first  bool // the next call is the phase's first (its ctx's deadline)
	cancel context.CancelFunc
}

var (
	errBodyTooLarge = errors.New("body larger than the extension's buffer limit")
	errBodyLocal    = errors.New("the plugin answered while the body was streaming")
)

// buffer is the guest-visible body buffer of the pump's direction.
func (b *bodyPump) buffer() *[]byte {
	if b.resp {
		return &b.st.respBody
	}
	return &b.st.reqBody
}

// step reads one chunk and gives the guest what is buffered.
func (b *bodyPump) step(ctx context.Context) error {
	st, in := b.st, b.st.in
	if b.chunk == nil {
		b.chunk = make([]byte, bodyChunk)
	}
	n, err := b.src.Read(b.chunk)
	buf := b.buffer()
	*buf = append(*buf, b.chunk[:n]...)
	if b.left >= 0 {
		// A body of known length ends with its last byte, as the codec's
		// end of stream comes with the last data (no empty call after).
		if b.left -= int64(n); b.left <= 0 {
			err = io.EOF
		}
	}
	switch {
	case err == io.EOF:
		b.eos = true
	case err != nil:
		return err
	case n == 0:
		return nil
	}
	if !b.first {
		if b.cancel != nil {
			b.cancel()
		}
		parent := st.s.Ctx
		if parent == nil {
			parent = context.Background()
		}
		ctx, b.cancel = context.WithTimeout(parent, in.p.rt.opts.CompleteTimeout)
	}
	b.first = false
	in.effective = st.id
	fn, name := in.fn.reqBody, "proxy_on_request_body"
	if b.resp {
		fn, name = in.fn.respBody, "proxy_on_response_body"
	}
	act, err := in.call(ctx, fn, name, uint64(st.id), uint64(len(*buf)), b2u(b.eos))
	if err != nil {
		return err
	}
	if act == guestPause && st.pending > 0 {
		if _, err := st.afterCallback(ctx, act); err != nil {
			return err
		}
		act = guestContinue // resumed (or answered)
	}
	if st.local {
		return errBodyLocal
	}
	if act != guestPause || b.eos {
		// A Pause at the end with nothing pending: Envoy would wait for a
		// resume that nothing can send; the body goes on.
		b.out = append(b.out, *buf...)
		*buf = (*buf)[:0]
		return nil
	}
	if len(*buf) > in.p.rt.opts.MaxBodyBytes {
		return errBodyTooLarge
	}
	return nil
}

func (b *bodyPump) close() {
	if b.cancel != nil {
		b.cancel()
		b.cancel = nil
	}
}

// pumpHead runs the phase's part of a body: chunks until the end, a local
// answer, or the first bytes let go before the end. It returns the body
// to pass on (the whole body, or a streaming reader) and its length (-1
// while streaming).
func (b *bodyPump) pumpHead(ctx context.Context) (io.Reader, int64, error) {
	b.first = true
	for {
		if err := b.step(ctx); err != nil {
			b.close()
			return nil, 0, err
		}
		if b.eos {
			b.close()
			return bytes.NewReader(b.out), int64(len(b.out)), nil
		}
		if len(b.out) > 0 {
			b.st.streaming = true
			if b.resp {
				return &bodyStream{p: b}, -1, nil
			}
			return &requestBodyStream{bodyStream{p: b}}, -1, nil
		}
	}
}

// bodyStream is the rest of a body after the phase let bytes go: each
// Read hands on what the guest let go, reading chunks for it as needed.
type bodyStream struct {
	p   *bodyPump
	err error
}

func (s *bodyStream) Read(out []byte) (int, error) {
	p := s.p
	for len(p.out) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if p.eos {
			p.close()
			return 0, io.EOF
		}
		p.st.tr.mu.Lock()
		if p.st.ended {
			// The stream completed (its instance may serve another now):
			// the rest passes unseen.
			p.st.tr.mu.Unlock()
			p.close()
			if buf := p.buffer(); len(*buf) > 0 {
				p.out, *buf = *buf, nil
				break
			}
			return p.src.Read(out)
		}
		err := p.step(context.Background()) // step gives each call its own deadline
		p.st.tr.mu.Unlock()
		if err != nil {
			p.close()
			s.err = fmt.Errorf("wasm plugin %q: body: %w", p.st.in.p.name, err)
		}
	}
	n := copy(out, p.out)
	p.out = p.out[n:]
	return n, nil
}

// requestBodyStream keeps the transport's ability to interrupt a blocked
// Read of the downstream body (upstream.Aborter).
type requestBodyStream struct{ bodyStream }

var _ upstream.Aborter = (*requestBodyStream)(nil)

func (s *requestBodyStream) Abort() {
	if a, ok := s.p.src.(upstream.Aborter); ok {
		a.Abort()
	}
}
