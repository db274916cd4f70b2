package extension_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
)

// netRuntime's plugins filter connections: Data answers "seen:" and the
// bytes, unless the bytes name a misbehaviour: error, panic, spin (waits
// for ctx, like an interrupted guest) or stuck (ignores ctx and returns
// past its deadline, like native code).
type netRuntime struct{ noopRuntime }

func (netRuntime) Load(context.Context, extpkg.Manifest, []byte, []byte) (extension.Plugin, error) {
	return netPlugin{}, nil
}

type netPlugin struct{ noopPlugin }

func (netPlugin) NewConnection(context.Context, filter.Downstream) (extension.Conn, extension.Action, error) {
	return netConn{}, extension.Continue, nil
}

type netConn struct{}

func (netConn) Data(ctx context.Context, b []byte, _, _ bool) ([]byte, extension.Action, error) {
	switch string(b) {
	case "error":
		return nil, extension.Continue, errors.New("asked to fail")
	case "panic":
		panic("asked to panic")
	case "spin":
		<-ctx.Done()
		return nil, extension.Continue, ctx.Err()
	case "stuck":
		dl, _ := ctx.Deadline()
		time.Sleep(time.Until(dl) + 2*time.Millisecond)
	}
	return append([]byte("seen:"), b...), extension.Continue, nil
}

func (netConn) Close() {}

// TestNetworkPolicies: a failed Data call under fail_open takes the
// extension out of the connection (these bytes and the next pass
// unchanged), under fail_closed it fails the read (the connection
// closes); a call that returns past its deadline is a timeout even when it
// says it succeeded.
func TestNetworkPolicies(t *testing.T) {
	tests := []struct {
		name    string
		policy  extv1.Policy
		send    string
		want    string // what Data returns; "" with wantErr
		wantErr bool
		outcome string
	}{
		{name: "ok", policy: extv1.Policy_FAIL_CLOSED, send: "hello", want: "seen:hello", outcome: "ok"},
		{name: "fail_open error", policy: extv1.Policy_FAIL_OPEN, send: "error", want: "error", outcome: "error"},
		{name: "fail_open panic", policy: extv1.Policy_FAIL_OPEN, send: "panic", want: "panic", outcome: "panic"},
		{name: "fail_open spin", policy: extv1.Policy_FAIL_OPEN, send: "spin", want: "spin", outcome: "timeout"},
		{name: "fail_open stuck", policy: extv1.Policy_FAIL_OPEN, send: "stuck", want: "stuck", outcome: "timeout"},
		{name: "fail_closed error", policy: extv1.Policy_FAIL_CLOSED, send: "error", wantErr: true, outcome: "error"},
		{name: "fail_closed spin", policy: extv1.Policy_FAIL_CLOSED, send: "spin", wantErr: true, outcome: "timeout"},
		{name: "fail_closed stuck", policy: extv1.Policy_FAIL_CLOSED, send: "stuck", wantErr: true, outcome: "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			f := newFactoryWith(t, reg, netRuntime{})
			m := extpkg.Manifest{Name: "net", Version: "1", Kind: extpkg.KindDSL, ABI: "go-test/1"}
			n, err := f.BuildNetwork(extAny(t, &extv1.Extension{Name: "net", Package: pkg(t, 1, m, "net"),
				Policy: tt.policy, Deadline: durationpb.New(20 * time.Millisecond)}), "tcp")
			if err != nil {
				t.Fatal(err)
			}
			c, err := n.NewConn(context.Background(), filter.Downstream{})
			if err != nil || c == nil {
				t.Fatalf("NewConn: %v, %v", c, err)
			}
			defer c.Close()
			// Several calls on one connection: its call context is reused.
			for range 3 {
				if out, err := c.Data([]byte("warm"), true, false); err != nil || string(out) != "seen:warm" {
					t.Fatalf("Data before: %q, %v", out, err)
				}
			}
			out, err := c.Data([]byte(tt.send), true, false)
			if tt.wantErr != (err != nil) || string(out) != tt.want {
				t.Fatalf("Data(%q) = %q, %v; want %q, error %v", tt.send, out, err, tt.want, tt.wantErr)
			}
			if got := counter(t, reg, "omnirelay_extension_calls_total", "outcome", tt.outcome); got < 1 {
				t.Fatalf("no %s call counted", tt.outcome)
			}
			if tt.policy == extv1.Policy_FAIL_OPEN && tt.outcome != "ok" {
				if out, err := c.Data([]byte("after"), true, false); err != nil || string(out) != "after" {
					t.Fatalf("Data after fail_open: %q, %v; want the bytes unchanged", out, err)
				}
			}
		})
	}
}
