package h2

import (
	"context"
	"sync"
	"time"
)

// streamCtx is a server stream's context: done when the peer resets the
// stream, when the connection dies, or when the handler has returned. It is
// part of the pooled Stream so that a request costs no context allocation;
// its Done channel is made only if someone asks for it (this package's
// Client does not: it registers itself as the watcher instead).
//
// It implements the unexported afterFuncer interface of package context, so
// that context.WithCancel and context.AfterFunc on it register a callback
// instead of starting a goroutine per request.
type streamCtx struct {
	parent context.Context

	mu    sync.Mutex
	done  chan struct{}
	err   error
	funcs []afterFunc
	seq   uint64
	// watcher is this package's Client stream forwarding a server stream
	// (the proxy path): it is told directly, without a callback allocation.
	watcher *clientStream
}

type afterFunc struct {
	id uint64
	f  func()
}

var _ context.Context = (*streamCtx)(nil)

func (c *streamCtx) Deadline() (time.Time, bool) { return c.parent.Deadline() }
func (c *streamCtx) Value(key any) any           { return c.parent.Value(key) }

func (c *streamCtx) Done() <-chan struct{} {
	c.mu.Lock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
		}
	}
	d := c.done
	c.mu.Unlock()
	return d
}

func (c *streamCtx) Err() error {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	return err
}

// AfterFunc lets context.AfterFunc and context.WithCancel hook this context
// without a watcher goroutine.
func (c *streamCtx) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	c.seq++
	id := c.seq
	c.funcs = append(c.funcs, afterFunc{id: id, f: f})
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i := range c.funcs {
			if c.funcs[i].id == id {
				c.funcs = append(c.funcs[:i], c.funcs[i+1:]...)
				return true
			}
		}
		return false
	}
}

// watch registers the in-package forwarder; it reports false if the context
// is already done.
func (c *streamCtx) watch(cs *clientStream) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return false
	}
	c.watcher = cs
	return true
}

func (c *streamCtx) unwatch(cs *clientStream) {
	c.mu.Lock()
	if c.watcher == cs {
		c.watcher = nil
	}
	c.mu.Unlock()
}

func (c *streamCtx) cancel(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	if c.done != nil {
		close(c.done)
	}
	funcs := c.funcs
	c.funcs = c.funcs[len(c.funcs):]
	// The forwarder is told under c.mu: its unwatch (in clientStream.close)
	// then waits for this call to end before the exchange is released to
	// the pool, which a call made after Unlock could find half recycled
	// (a nil connection). downstreamCancelled takes only the client
	// connection's lock, which is never held while c.mu is taken.
	if w := c.watcher; w != nil {
		c.watcher = nil
		w.downstreamCancelled()
	}
	c.mu.Unlock()
	for _, af := range funcs {
		go af.f()
	}
}

// reset prepares the context for the next stream. A closed Done channel
// cannot be reused; an open one (a stream that was never cancelled, which
// finish does not allow) could be, since nobody may hold it any more.
func (c *streamCtx) reset(parent context.Context) {
	c.mu.Lock()
	if c.err != nil {
		c.done = nil
	}
	c.err = nil
	for i := range c.funcs {
		c.funcs[i] = afterFunc{}
	}
	c.funcs = c.funcs[:0]
	c.watcher = nil
	c.parent = parent
	c.mu.Unlock()
}
