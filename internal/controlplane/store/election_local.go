package store

import (
	"context"
	"fmt"
	"sync"
)

// localElections is Campaign for a store only one process opens (bbolt):
// the first campaigner of an election leads, the others wait for it to
// resign. Nothing is persisted: after a restart nobody leads.
type localElections struct {
	mu      sync.Mutex
	leaders map[string]*localLeadership
	closed  bool
}

type localLeadership struct {
	e        *localElections
	election string
	lost     chan struct{}
	once     sync.Once
}

var _ Leadership = (*localLeadership)(nil)

func newLocalElections() *localElections {
	return &localElections{leaders: make(map[string]*localLeadership)}
}

func (e *localElections) campaign(ctx context.Context, election, id string) (Leadership, error) {
	for {
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			return nil, fmt.Errorf("store: campaign %q as %q: %w", election, id, ErrClosed)
		}
		cur := e.leaders[election]
		if cur == nil {
			l := &localLeadership{e: e, election: election, lost: make(chan struct{})}
			e.leaders[election] = l
			e.mu.Unlock()
			return l, nil
		}
		e.mu.Unlock()
		select {
		case <-cur.lost:
		case <-ctx.Done():
			return nil, fmt.Errorf("store: campaign %q as %q: %w", election, id, ctx.Err())
		}
	}
}

func (e *localElections) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	for name, l := range e.leaders {
		delete(e.leaders, name)
		l.end()
	}
}

func (l *localLeadership) Lost() <-chan struct{} { return l.lost }

func (l *localLeadership) Resign(context.Context) error {
	l.e.mu.Lock()
	if l.e.leaders[l.election] == l {
		delete(l.e.leaders, l.election)
	}
	l.e.mu.Unlock()
	l.end()
	return nil
}

func (l *localLeadership) end() { l.once.Do(func() { close(l.lost) }) }
