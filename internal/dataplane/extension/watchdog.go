package extension

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
)

// Outcome is how one call into a plugin ended.
type Outcome uint8

const (
	OutcomeOK Outcome = iota
	OutcomeError
	OutcomeTimeout
	OutcomePanic
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"ok", "error", "timeout", "panic"}

func (o Outcome) String() string {
	if o < numOutcomes {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", o)
}

// Metrics are the extension metric families of one process. Their names
// are part of the operator interface (docs/extensions.md).
type Metrics struct {
	calls   *prometheus.CounterVec
	reloads *prometheus.CounterVec
}

// NewMetrics registers the extension metrics with reg (nil: unregistered,
// for tests).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "omnirelay_extension_calls_total",
			Help: "Calls into extension plugins by outcome (ok, error, timeout, panic).",
		}, []string{"extension", "kind", "outcome"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "omnirelay_extension_reloads_total",
			Help: "Plugin reloads under the reload policy by result (ok, error).",
		}, []string{"extension", "kind", "result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.calls, m.reloads} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("extension metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Watchdog times, guards and counts the calls into one extension. It is
// built with the filter (once per config version) and shared by its
// streams.
//
// Clock reads were the largest host cost of a Wasm call, so a call reads
// the monotonic clock only (time.Since of the watchdog's epoch, half the
// cost of time.Now) once at its start, for its deadline, and once at its
// end, to turn a late answer into a timeout; a plugin that keeps its
// deadline itself (Capabilities.KeepsDeadline) skips the end read, and the
// phases a plugin has no work in are not called at all. The resolution that
// costs: a Wasm guest call that ends after its deadline but before the
// interrupt timer has run counts as ok. A coarse clock kept by a ticker
// goroutine was not taken: 20-30 µs of CPU per 1 ms tick on an idle process
// against ~25 ns saved per call pays only past about a million extension
// calls per second. There is no latency histogram, so no timing to sample.
type Watchdog struct {
	name, kind string
	deadline   time.Duration
	// epoch is the origin of the call contexts' deadlines, which are kept
	// as offsets from it: time.Since of a time with a monotonic reading
	// reads only the monotonic clock, half the cost of time.Now (which
	// reads the wall clock too), and a call reads the clock at its start
	// and, unless its plugin keeps the deadline itself, at its end.
	epoch    time.Time
	counters [numOutcomes]prometheus.Counter
	log      *slog.Logger
	// lastLog rate-limits failure logs to one a second per extension: a
	// plugin failing under load must not flood the log.
	lastLog atomic.Int64
}

// NewWatchdog returns the watchdog of extension name (of kind) whose calls
// may each take up to deadline.
func NewWatchdog(name, kind string, deadline time.Duration, m *Metrics, log *slog.Logger) *Watchdog {
	w := &Watchdog{name: name, kind: kind, deadline: deadline, epoch: time.Now(), log: log}
	for o := range numOutcomes {
		w.counters[o] = m.calls.WithLabelValues(name, kind, o.String())
	}
	return w
}

// Deadline is the time each call may take.
func (w *Watchdog) Deadline() time.Duration { return w.deadline }

// onRequest calls in's OnRequest under the watchdog.
func (w *Watchdog) onRequest(in *instance, c *callCtx, s *filter.Stream) (a Action, o Outcome, err error) {
	c.begin(s.Ctx, w.epoch, w.deadline)
	defer func() {
		o, err = w.settle(c, in.caps.KeepsDeadline, recover(), err)
	}()
	a, err = in.plugin.OnRequest(c, s)
	return a, OutcomeOK, err
}

// onResponse calls in's OnResponse under the watchdog.
func (w *Watchdog) onResponse(in *instance, c *callCtx, s *filter.Stream) (o Outcome, err error) {
	c.begin(s.Ctx, w.epoch, w.deadline)
	defer func() {
		o, err = w.settle(c, in.caps.KeepsDeadline, recover(), err)
	}()
	err = in.plugin.OnResponse(c, s)
	return OutcomeOK, err
}

// onComplete calls p.OnComplete, containing a panic (counted, logged: the
// stream is over, there is no policy left to apply).
func (w *Watchdog) onComplete(p Plugin, s *filter.Stream) {
	defer func() {
		if r := recover(); r != nil {
			w.count(OutcomePanic, fmt.Errorf("OnComplete panicked: %v", r))
		}
	}()
	p.OnComplete(s)
}

// settle classifies a finished call. A call that came back after its
// deadline is a timeout even if it says it succeeded: a runtime that cannot
// be interrupted still must not get its late answer used. A plugin that
// keeps its deadline itself (Capabilities.KeepsDeadline) has already turned a late call
// into an error, so its calls are not timed again here.
func (w *Watchdog) settle(c *callCtx, keeps bool, panicked any, err error) (Outcome, error) {
	late := !keeps && c.late()
	var o Outcome
	switch {
	case panicked != nil:
		o, err = OutcomePanic, fmt.Errorf("panic: %v", panicked)
	case late || errors.Is(err, context.DeadlineExceeded):
		o = OutcomeTimeout
		if err == nil {
			err = fmt.Errorf("call took longer than its %v deadline", w.deadline)
		}
	case err != nil:
		o = OutcomeError
	}
	w.count(o, err)
	return o, err
}

func (w *Watchdog) count(o Outcome, err error) {
	w.counters[o].Inc()
	if o == OutcomeOK || w.log == nil {
		return
	}
	now := time.Now().UnixNano()
	last := w.lastLog.Load()
	if now-last < int64(time.Second) || !w.lastLog.CompareAndSwap(last, now) {
		return
	}
	w.log.Warn("extension call failed", "extension", w.name, "kind", w.kind, "outcome", o.String(), "reason", err)
}

// callCtx is the context of one plugin call: the stream's context with the
// watchdog deadline. It is kept in the stream's state and reused call after
// call, so that a runtime that never asks for Done (the DSL) costs no
// allocation, and one that does (wazero, to interrupt a guest) costs one
// timer per stream rather than a context.WithDeadline per call: the Done
// channel stays open, and reusable, until a deadline passes or the stream's
// context ends; then the value is retired (a goroutine the runtime started
// may still watch that channel) and the stream gets a fresh one.
type callCtx struct {
	parent context.Context
	// The deadline is deadline after epoch (see Watchdog.epoch).
	epoch    time.Time
	deadline time.Duration

	mu         sync.Mutex // Done and fire may run on other goroutines
	done       chan struct{}
	err        error       // set when done is closed
	timer      *time.Timer // closes done at the deadline; reset per call
	stopParent func() bool // unregisters the close on the parent's end
}

var _ context.Context = (*callCtx)(nil)

func (c *callCtx) begin(parent context.Context, epoch time.Time, d time.Duration) {
	if parent == nil {
		parent = context.Background()
	}
	deadline := time.Since(epoch) + d
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.parent != parent && c.stopParent != nil {
		c.stopParent() // a new stream on a pooled value
		c.stopParent = nil
	}
	c.parent, c.epoch, c.deadline = parent, epoch, deadline
	if c.timer != nil {
		c.timer.Reset(d)
	}
}

// late reports whether the call's deadline has passed.
func (c *callCtx) late() bool {
	return time.Since(c.epoch) >= c.deadline
}

// release ends a call and reports whether c may be used for another one:
// yes unless its Done channel was closed.
func (c *callCtx) release() (reusable bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil && !c.timer.Stop() {
		// The timer fired (or is firing): done is, or is about to be,
		// closed.
		return false
	}
	return c.err == nil
}

// detach ends c's tie to its stream's context (at the end of the stream).
func (c *callCtx) detach() (reusable bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopParent != nil {
		c.stopParent()
		c.stopParent = nil
	}
	return c.err == nil
}

func (c *callCtx) fire(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
		close(c.done)
	}
}

func (c *callCtx) Deadline() (time.Time, bool) {
	c.mu.Lock()
	parent, deadline := c.parent, c.epoch.Add(c.deadline)
	c.mu.Unlock()
	if d, ok := parent.Deadline(); ok && d.Before(deadline) {
		return d, true
	}
	return deadline, true
}

func (c *callCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
	}
	if c.timer == nil && c.err == nil {
		c.timer = time.AfterFunc(c.deadline-time.Since(c.epoch), func() { c.fire(context.DeadlineExceeded) })
	}
	if c.stopParent == nil && c.err == nil && c.parent.Done() != nil {
		parent := c.parent
		c.stopParent = context.AfterFunc(parent, func() { c.fire(context.Cause(parent)) })
	}
	return c.done
}

func (c *callCtx) Err() error {
	c.mu.Lock()
	err, parent, epoch, deadline := c.err, c.parent, c.epoch, c.deadline
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if err := parent.Err(); err != nil {
		return err
	}
	if time.Since(epoch) >= deadline {
		return context.DeadlineExceeded
	}
	return nil
}

func (c *callCtx) Value(key any) any {
	c.mu.Lock()
	parent := c.parent
	c.mu.Unlock()
	return parent.Value(key)
}
