package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/omnirelay/omnirelay/internal/controlplane/api"
)

// stepRollouts answers every step with the step in the version, and
// refuses promote and rollback of "idle" (no canary) as MeshKit does.
type stepRollouts struct{}

var entries = []string{"listeners[0].filters[0].extension", "listeners[1].filters[0].extension"}

func (stepRollouts) Canary(_ context.Context, name, pkg string, percent uint32, by string) (string, []string, error) {
	return "canary-" + name + "-" + pkg + "-" + by, entries, nil
}

func (stepRollouts) Promote(_ context.Context, name string) (string, []string, error) {
	if name == "idle" {
		return "", nil, status.Errorf(codes.FailedPrecondition, "extension %q: no canary to promote", name)
	}
	return "promoted", entries, nil
}

func (stepRollouts) Rollback(_ context.Context, name string) (string, []string, error) {
	if name == "idle" {
		return "", nil, status.Errorf(codes.FailedPrecondition, "extension %q: no canary to roll back", name)
	}
	return "rolled-back", entries, nil
}

func TestExtRolloutCommands(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	api.New(api.Options{Rollouts: stepRollouts{}}).RegisterGRPC(g)
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(l) }()
	t.Cleanup(func() { g.Stop(); <-done })
	addr := l.Addr().String()
	tests := []struct {
		name string
		args []string
		want string // in stdout, or in the error when err
		err  bool
	}{
		{name: "canary by proxies", args: []string{"ext", "canary", "stamp", "--package", "store:stamp@2.0.0", "--percent", "50", "--by", "proxies"},
			want: "canary of stamp: store:stamp@2.0.0 for 50% of the proxies: config version canary-stamp-store:stamp@2.0.0-proxies (2 entries: listeners[0]"},
		{name: "canary by requests is the default", args: []string{"ext", "canary", "stamp", "--package", "store:stamp@2.0.0", "--percent", "10"},
			want: "for 10% of the requests"},
		{name: "canary needs a stored package", args: []string{"ext", "canary", "stamp", "--package", "stamp.orx", "--percent", "10"},
			want: "want store:NAME@VERSION", err: true},
		{name: "canary needs a percent", args: []string{"ext", "canary", "stamp", "--package", "store:stamp@2"}, want: `"percent" not set`, err: true},
		{name: "promote", args: []string{"ext", "promote", "stamp"}, want: "promoted stamp: config version promoted"},
		{name: "promote json", args: []string{"ext", "promote", "stamp", "-o", "json"}, want: `"version": "promoted"`},
		{name: "rollback", args: []string{"ext", "rollback", "stamp"}, want: "rolled back stamp: config version rolled-back"},
		{name: "promote without canary", args: []string{"ext", "promote", "idle"}, want: "FailedPrecondition: extension \"idle\": no canary to promote", err: true},
		{name: "rollback without canary", args: []string{"ext", "rollback", "idle"}, want: "no canary to roll back", err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out, _, err := run(ctx, addr, tc.args...)
			if tc.err {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want it to mention %q (output %q)", err, tc.want, out)
				}
				return
			}
			if err != nil || !strings.Contains(out, tc.want) {
				t.Fatalf("output %q, err %v; want %q", out, err, tc.want)
			}
		})
	}
}
