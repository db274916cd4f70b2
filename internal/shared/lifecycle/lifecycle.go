// Package lifecycle orders the stopping of what a process started.
package lifecycle

import "context"

// Stack holds how to stop each thing a start has started, and stops them
// last started first. A start pushes a step after each thing it starts; if
// a later step fails, running the stack undoes exactly what was started,
// and the same stack is the process's orderly shutdown. A Stack is not
// safe for concurrent use: the start pushes, then one caller runs it.
type Stack struct {
	steps []func(context.Context) error
}

// Push adds a step, to run before every step pushed earlier.
func (s *Stack) Push(step func(context.Context) error) { s.steps = append(s.steps, step) }

// Run runs every step, last pushed first, even when one fails, and returns
// the first error. ctx bounds the steps that wait (a drain). The stack is
// empty afterwards.
func (s *Stack) Run(ctx context.Context) error {
	var first error
	for i := len(s.steps) - 1; i >= 0; i-- {
		if err := s.steps[i](ctx); err != nil && first == nil {
			first = err
		}
	}
	s.steps = nil
	return first
}
