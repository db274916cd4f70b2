package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// TestDriveSmall runs the driver against an in-process server of each
// implementation and mode with a few clients: every client must receive
// every update and the report must have its row.
func TestDriveSmall(t *testing.T) {
	tests := []struct{ name, impl, mode string }{
		{name: "omni delta", impl: "omni", mode: "delta"},
		{name: "omni sotw", impl: "omni", mode: "sotw"},
		{name: "omni-lean delta", impl: "omni-lean", mode: "delta"},
		{name: "omni-lean sotw", impl: "omni-lean", mode: "sotw"},
		{name: "gcp delta", impl: "gcp", mode: "delta"},
		{name: "gcp sotw", impl: "gcp", mode: "sotw"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr, ctl := testutil.Addr(t), testutil.Addr(t)
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() { served <- serve(ctx, tc.impl, addr, ctl, 3, 2) }()
			defer func() {
				cancel()
				if err := <-served; err != nil {
					t.Errorf("serve: %v", err)
				}
			}()
			var out bytes.Buffer
			args := []string{"-spawn=false", "-addr", addr, "-ctl", ctl, "-impl", tc.impl, "-mode", tc.mode,
				"-clients", "20", "-updates", "2", "-clusters", "3", "-endpoints", "2"}
			if err := run(ctx, args, &out); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), "| "+tc.impl+" | "+tc.mode+" | 20 |") {
				t.Fatalf("report:\n%s", out.String())
			}
		})
	}
}
