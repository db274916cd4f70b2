package api

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

func TestGRPCRegistry(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	rc := meshkitv1.NewRegistryClient(e.conn)

	reg, err := rc.Register(ctx, &meshkitv1.RegisterRequest{Endpoint: &meshkitv1.Endpoint{
		Service: "shop", Address: "127.0.0.1:9001", Weight: 3,
		Locality: &meshkitv1.Locality{Region: "eu", Zone: "eu-1"}, Metadata: map[string]string{"version": "v2"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	got := reg.GetEndpoint()
	if got.GetId() != "127.0.0.1-9001" || got.GetHealth() != meshkitv1.Health_HEALTHY || got.GetTtl().AsDuration().Seconds() != 30 || got.GetLeaseExpiresAt() == nil {
		t.Fatalf("registered endpoint %v", got)
	}

	hb, err := rc.Heartbeat(ctx, &meshkitv1.HeartbeatRequest{Service: "shop", Id: got.GetId(), Ttl: durationpb.New(60e9), Health: meshkitv1.Health_DRAINING})
	if err != nil {
		t.Fatal(err)
	}
	if hb.GetEndpoint().GetHealth() != meshkitv1.Health_DRAINING || hb.GetEndpoint().GetTtl().AsDuration().Seconds() != 60 {
		t.Fatalf("after heartbeat %v", hb.GetEndpoint())
	}

	svcs, err := rc.ListServices(ctx, &meshkitv1.ListServicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if want := (&meshkitv1.Service{Name: "shop", Endpoints: 1}); len(svcs.GetServices()) != 1 || !proto.Equal(svcs.GetServices()[0], want) {
		t.Fatalf("services %v, want [%v]", svcs.GetServices(), want)
	}
	eps, err := rc.ListEndpoints(ctx, &meshkitv1.ListEndpointsRequest{Service: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if len(eps.GetEndpoints()) != 1 || !proto.Equal(eps.GetEndpoints()[0], hb.GetEndpoint()) {
		t.Fatalf("endpoints %v, want [%v]", eps.GetEndpoints(), hb.GetEndpoint())
	}
	if _, err := rc.Deregister(ctx, &meshkitv1.DeregisterRequest{Service: "shop", Id: got.GetId()}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		call func() error
		code codes.Code
		msgs []string
	}{
		{
			name: "every invalid field at once",
			call: func() error {
				_, err := rc.Register(ctx, &meshkitv1.RegisterRequest{Endpoint: &meshkitv1.Endpoint{Service: "shop", Address: "nope", Weight: 500}})
				return err
			},
			code: codes.InvalidArgument,
			msgs: []string{`address "nope": must be host:port`, `weight "500": must be 1..128`},
		},
		{
			name: "no endpoint",
			call: func() error { _, err := rc.Register(ctx, &meshkitv1.RegisterRequest{}); return err },
			code: codes.InvalidArgument,
			msgs: []string{"endpoint is required"},
		},
		{
			name: "heartbeat of a deregistered endpoint",
			call: func() error {
				_, err := rc.Heartbeat(ctx, &meshkitv1.HeartbeatRequest{Service: "shop", Id: got.GetId()})
				return err
			},
			code: codes.NotFound,
		},
		{
			name: "deregister twice",
			call: func() error {
				_, err := rc.Deregister(ctx, &meshkitv1.DeregisterRequest{Service: "shop", Id: got.GetId()})
				return err
			},
			code: codes.NotFound,
		},
		{
			name: "list endpoints of a bad service name",
			call: func() error {
				_, err := rc.ListEndpoints(ctx, &meshkitv1.ListEndpointsRequest{Service: "a/b"})
				return err
			},
			code: codes.InvalidArgument,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := status.Convert(tt.call())
			if st.Code() != tt.code {
				t.Fatalf("code %v (%s), want %v", st.Code(), st.Message(), tt.code)
			}
			for _, m := range tt.msgs {
				if !strings.Contains(st.Message(), m) {
					t.Errorf("message %q lacks %q", st.Message(), m)
				}
			}
		})
	}
}

func TestGRPCConfig(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	cc := meshkitv1.NewConfigClient(e.conn)

	if _, err := cc.Get(ctx, &meshkitv1.GetConfigRequest{}); status.Code(err) != codes.NotFound {
		t.Fatalf("Get before any Apply: %v, want NOT_FOUND", err)
	}
	_, err := cc.Apply(ctx, &meshkitv1.ApplyRequest{Filename: "mesh.yaml", Yaml: []byte(invalidConfig)})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("invalid config: %v, want INVALID_ARGUMENT", err)
	}
	// Each error names the file, its position and path, and the reason.
	for _, want := range []string{"mesh.yaml:", `routes[0].cluster: unknown cluster`, "clusters[1].name: duplicate cluster name"} {
		if !strings.Contains(st.Message(), want) {
			t.Errorf("message lacks %q:\n%s", want, st.Message())
		}
	}
	applied, err := cc.Apply(ctx, &meshkitv1.ApplyRequest{Filename: "mesh.yaml", Yaml: []byte(validConfig)})
	if err != nil {
		t.Fatal(err)
	}
	got, err := cc.Get(ctx, &meshkitv1.GetConfigRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if string(got.GetYaml()) != validConfig || got.GetVersion() != applied.GetVersion() || got.GetVersion() == "" {
		t.Fatalf("Get = %q @ %q, want the applied config @ %q", got.GetYaml(), got.GetVersion(), applied.GetVersion())
	}

	pl, err := meshkitv1.NewProxiesClient(e.conn).List(ctx, &meshkitv1.ListProxiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pl.GetProxies()) != 1 || !proto.Equal(pl.GetProxies()[0], testProxies[0]) {
		t.Fatalf("proxies %v", pl.GetProxies())
	}
}
