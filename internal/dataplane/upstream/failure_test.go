package upstream

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestFailureOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Failure
		flag string
	}{
		{"connect", fmt.Errorf("%w: 127.0.0.1:1: refused", ErrConnect), FailConnect, "UF"},
		{"timeout", ErrTimeout, FailTimeout, "UT"},
		{"deadline", fmt.Errorf("read: %w", context.DeadlineExceeded), FailTimeout, "UT"},
		{"canceled", context.Canceled, FailTimeout, "UT"},
		{"overflow", ErrOverflow, FailOverflow, "UO"},
		{"refused stream", ErrRefused, FailRefused, "UR"},
		{"reset", ErrReset, FailReset, "UR"},
		{"anything else is a reset", errors.New("unexpected EOF"), FailReset, "UR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := FailureOf(tt.err)
			if f != tt.want {
				t.Fatalf("FailureOf(%v) = %v, want %v", tt.err, f, tt.want)
			}
			if got := f.ResponseFlag(); got != tt.flag {
				t.Fatalf("%v.ResponseFlag() = %q, want %q", f, got, tt.flag)
			}
		})
	}
}
