package store

import (
	"context"
	"strings"
	"sync"
)

// hub is the in-process watch fan-out of the bbolt store. It keeps a bounded
// history of recent events so that the List-then-Watch loop can resume from
// a revision that has already passed, and it never lets a slow watcher hold
// up a writer: each subscriber has its own queue and goroutine, and a queue
// that grows past the history limit kills the subscription (the caller
// re-Lists, as after an etcd compaction).
type hub struct {
	limit int

	mu      sync.Mutex
	history []Event // every event with revision > floor, in revision order
	floor   int64
	subs    map[*subscriber]struct{}
	closed  bool
	wg      sync.WaitGroup // subscriber goroutines
}

type subscriber struct {
	prefix string
	after  int64
	out    chan []Event
	wake   chan struct{} // capacity 1: "pending has grown"
	kill   chan struct{} // closed by the hub: store closed or queue overflow

	mu      sync.Mutex
	pending []Event
	killed  bool
}

func newHub(floor int64, limit int) *hub {
	return &hub{limit: limit, floor: floor, subs: make(map[*subscriber]struct{})}
}

// publish records one write's events and queues them for the matching
// subscribers. Callers serialise publish in revision order.
func (h *hub) publish(events []Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.history = append(h.history, events...)
	// Trim only at twice the limit so that the copy is amortised over
	// limit writes instead of paid on each one.
	if len(h.history) > 2*h.limit {
		drop := len(h.history) - h.limit
		// Drop whole revisions so that floor stays a clean cut.
		for drop < len(h.history) && h.history[drop].KV.Revision == h.history[drop-1].KV.Revision {
			drop++
		}
		h.floor = h.history[drop-1].KV.Revision
		h.history = append(h.history[:0:0], h.history[drop:]...)
	}
	for s := range h.subs {
		s.queue(events, 2*h.limit)
	}
}

// subscribe registers a watcher for events under prefix after afterRev. It
// returns a closed channel when the history no longer reaches back to
// afterRev or the hub is closed.
func (h *hub) subscribe(ctx context.Context, prefix string, afterRev int64) <-chan []Event {
	out := make(chan []Event)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || afterRev < h.floor {
		close(out)
		return out
	}
	s := &subscriber{
		prefix: prefix,
		after:  afterRev,
		out:    out,
		wake:   make(chan struct{}, 1),
		kill:   make(chan struct{}),
	}
	s.queue(h.history, 2*h.limit)
	h.subs[s] = struct{}{}
	h.wg.Add(1)
	go h.run(ctx, s)
	return out
}

// queue appends the events this subscriber wants, killing the subscription
// if more than most are waiting; the caller holds h.mu.
func (s *subscriber) queue(events []Event, most int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.killed {
		return
	}
	for _, ev := range events {
		if ev.KV.Revision <= s.after || !strings.HasPrefix(ev.KV.Key, s.prefix) {
			continue
		}
		if len(s.pending) >= most {
			s.killLocked()
			return
		}
		s.pending = append(s.pending, ev)
	}
	if len(s.pending) > 0 {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

func (s *subscriber) killLocked() {
	if !s.killed {
		s.killed = true
		s.pending = nil
		close(s.kill)
	}
}

// run delivers the subscriber's queue as batches: everything queued since
// the last send goes out together, so a slow reader gets fewer, larger
// batches rather than falling behind one event at a time.
func (h *hub) run(ctx context.Context, s *subscriber) {
	defer h.wg.Done()
	defer close(s.out)
	defer h.unsubscribe(s)
	for {
		s.mu.Lock()
		batch := s.pending
		s.pending = nil
		s.mu.Unlock()
		if len(batch) == 0 {
			select {
			case <-s.wake:
				continue
			case <-s.kill:
				return
			case <-ctx.Done():
				return
			}
		}
		select {
		case s.out <- batch:
		case <-s.kill:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (h *hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
}

// close ends every subscription and waits for their goroutines.
func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	for s := range h.subs {
		s.mu.Lock()
		s.killLocked()
		s.mu.Unlock()
	}
	h.mu.Unlock()
	h.wg.Wait()
}
