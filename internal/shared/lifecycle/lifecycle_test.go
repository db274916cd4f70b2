package lifecycle

import (
	"context"
	"errors"
	"slices"
	"testing"
)

func TestStackRunsLastPushedFirst(t *testing.T) {
	var s Stack
	var order []string
	step := func(name string, err error) func(context.Context) error {
		return func(context.Context) error { order = append(order, name); return err }
	}
	errB, errC := errors.New("b"), errors.New("c")
	s.Push(step("a", nil))
	s.Push(step("b", errB))
	s.Push(step("c", errC))
	if err := s.Run(context.Background()); err != errC {
		t.Fatalf("Run = %v, want the first error met (c)", err)
	}
	if want := []string{"c", "b", "a"}; !slices.Equal(order, want) {
		t.Fatalf("order %v, want %v (every step runs, even after an error)", order, want)
	}
	order = nil
	if err := s.Run(context.Background()); err != nil || len(order) != 0 {
		t.Fatalf("second Run: err %v, ran %v; want nothing left to run", err, order)
	}
}
