package registry

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable time source shared by the registries of a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func openStore(t *testing.T) store.Store { return openStoreB(t) }

func openStoreB(tb testing.TB) store.Store {
	tb.Helper()
	st, err := store.OpenBolt(filepath.Join(tb.TempDir(), "meshkit.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

func newRegistry(t *testing.T, st store.Store, c *clock) *Registry {
	t.Helper()
	return New(st, Options{Now: c.Now, SweepInterval: 10 * time.Millisecond})
}

func TestRegisterValidation(t *testing.T) {
	r := newRegistry(t, openStore(t), newClock())
	good := Endpoint{Service: "api", Address: "10.0.0.1:8080"}
	tests := []struct {
		name   string
		edit   func(*Endpoint)
		ttl    time.Duration
		fields []string
	}{
		{name: "no port", edit: func(e *Endpoint) { e.Address = "10.0.0.1" }, fields: []string{"address"}},
		{name: "port zero", edit: func(e *Endpoint) { e.Address = "10.0.0.1:0" }, fields: []string{"address"}},
		{name: "empty host", edit: func(e *Endpoint) { e.Address = ":80" }, fields: []string{"address"}},
		{name: "weight above envoy's max", edit: func(e *Endpoint) { e.Weight = 129 }, fields: []string{"weight"}},
		{name: "slash in service", edit: func(e *Endpoint) { e.Service = "a/b" }, fields: []string{"service"}},
		{name: "empty service", edit: func(e *Endpoint) { e.Service = "" }, fields: []string{"service"}},
		{name: "id ends with dash", edit: func(e *Endpoint) { e.ID = "x-" }, fields: []string{"id"}},
		{name: "bad health", edit: func(e *Endpoint) { e.Health = "sick" }, fields: []string{"health"}},
		{name: "ttl too short", ttl: 500 * time.Millisecond, fields: []string{"ttl"}},
		{name: "ttl too long", ttl: 2 * time.Hour, fields: []string{"ttl"}},
		{name: "every error at once", edit: func(e *Endpoint) { e.Address = "nope"; e.Weight = 500 }, ttl: time.Millisecond, fields: []string{"address", "weight", "ttl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ep := good
			if tt.edit != nil {
				tt.edit(&ep)
			}
			_, err := r.Register(t.Context(), ep, tt.ttl)
			if err == nil {
				t.Fatal("Register accepted an invalid endpoint")
			}
			var got []string
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var ie *InvalidError
				if !errors.As(e, &ie) {
					t.Fatalf("error %v is not an *InvalidError", e)
				}
				got = append(got, ie.Field)
			}
			if len(got) != len(tt.fields) {
				t.Fatalf("fields %v, want %v (err: %v)", got, tt.fields, err)
			}
			for i := range got {
				if got[i] != tt.fields[i] {
					t.Fatalf("fields %v, want %v (err: %v)", got, tt.fields, err)
				}
			}
		})
	}
}

func TestLeaseLifecycle(t *testing.T) {
	c := newClock()
	r := newRegistry(t, openStore(t), c)
	ctx := t.Context()

	l, err := r.Register(ctx, Endpoint{Service: "api", Address: "10.0.0.1:8080", Locality: Locality{Region: "eu", Zone: "eu-1"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if l.ID != "10.0.0.1-8080" || l.TTL != DefaultTTL || !l.ExpiresAt.Equal(c.Now().Add(DefaultTTL)) {
		t.Fatalf("lease %+v", l)
	}
	if _, err := r.Register(ctx, Endpoint{Service: "api", ID: "b", Address: "10.0.0.2:8080", Weight: 5}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register(ctx, Endpoint{Service: "api-v2", Address: "10.0.0.3:8080", Health: Draining}, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	svcs, err := r.Services(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantSvcs := []Service{{Name: "api", Endpoints: 2, Healthy: 2}, {Name: "api-v2", Endpoints: 1, Healthy: 0}}
	if len(svcs) != 2 || svcs[0] != wantSvcs[0] || svcs[1] != wantSvcs[1] {
		t.Fatalf("services %+v, want %+v", svcs, wantSvcs)
	}

	// b's lease (10 s) runs out first; readers drop it before any sweep.
	c.Advance(9 * time.Second)
	if _, err := r.Heartbeat(ctx, "api", "10.0.0.1-8080", 0); err != nil {
		t.Fatal(err)
	}
	c.Advance(2 * time.Second)
	eps, err := r.List(ctx, "api")
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 1 || eps[0].ID != "10.0.0.1-8080" || !eps[0].ExpiresAt.Equal(c.Now().Add(DefaultTTL-2*time.Second)) {
		t.Fatalf("after expiry of b: %+v", eps)
	}
	if _, err := r.Heartbeat(ctx, "api", "b", 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("heartbeat of an expired lease: %v, want ErrNotFound", err)
	}

	// Heartbeat may change the TTL; SetHealth leaves the lease alone.
	l, err = r.Heartbeat(ctx, "api", "10.0.0.1-8080", time.Minute)
	if err != nil || l.TTL != time.Minute {
		t.Fatalf("heartbeat with new ttl: %+v, %v", l, err)
	}
	if err := r.SetHealth(ctx, "api", "10.0.0.1-8080", Unhealthy); err != nil {
		t.Fatal(err)
	}
	got := r.Endpoints("api")
	want := config.Endpoint{Address: "10.0.0.1:8080", Weight: 1, Health: "unhealthy", Locality: &config.Locality{Region: "eu", Zone: "eu-1"}}
	if len(got) != 1 || got[0].Address != want.Address || got[0].Weight != want.Weight || got[0].Health != want.Health || *got[0].Locality != *want.Locality {
		t.Fatalf("Endpoints = %+v, want [%+v]", got, want)
	}

	if err := r.Deregister(ctx, "api", "10.0.0.1-8080"); err != nil {
		t.Fatal(err)
	}
	if err := r.Deregister(ctx, "api", "10.0.0.1-8080"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second deregister: %v, want ErrNotFound", err)
	}
	if got := r.Endpoints("api"); len(got) != 0 {
		t.Fatalf("Endpoints after deregister = %+v", got)
	}
}

func TestExpiryAcrossReplicas(t *testing.T) {
	st := openStore(t)
	c := newClock()
	r1, r2 := newRegistry(t, st, c), newRegistry(t, st, c)
	ctx := t.Context()

	changes := r2.Changes(ctx)
	ctx1, stop1 := context.WithCancel(ctx)
	ctx2, stop2 := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { r1.RunExpiry(ctx1, "r1") })
	wg.Go(func() { r2.RunExpiry(ctx2, "r2") })
	defer func() { stop1(); stop2(); wg.Wait() }()

	gone := func(key string) func() bool {
		return func() bool { _, err := st.Get(ctx, key); return errors.Is(err, store.ErrNotFound) }
	}
	// A change made through r1 reaches r2's subscribers.
	if _, err := r1.Register(ctx, Endpoint{Service: "api", ID: "a", Address: "10.0.0.1:80"}, time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Fatal("no change signalled for a registration on another replica")
	}
	c.Advance(2 * time.Second)
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, "the leader to delete the expired lease", testutil.Bool(gone(key("api", "a"))))
	<-changes // the deletion is a change too (coalesced with anything pending)

	// Whichever replica led, stopping one leaves the other sweeping.
	stop1()
	if _, err := r2.Register(ctx, Endpoint{Service: "api", ID: "b", Address: "10.0.0.2:80"}, time.Second); err != nil {
		t.Fatal(err)
	}
	c.Advance(2 * time.Second)
	testutil.Eventually(t, 5*time.Second, 5*time.Millisecond, "the remaining replica to delete the expired lease", testutil.Bool(gone(key("api", "b"))))

	// A heartbeat that lands before the sweep keeps the lease.
	if _, err := r2.Register(ctx, Endpoint{Service: "api", ID: "c", Address: "10.0.0.3:80"}, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	c.Advance(2 * time.Second)
	if _, err := r2.Heartbeat(ctx, "api", "c", 0); err != nil {
		t.Fatal(err)
	}
	c.Advance(2 * time.Second)
	if _, err := r1.Get(ctx, "api", "c"); err != nil {
		t.Fatalf("renewed lease: %v", err)
	}
}

func TestChangesCloseWithContext(t *testing.T) {
	r := newRegistry(t, openStore(t), newClock())
	ctx, cancel := context.WithCancel(t.Context())
	ch := r.Changes(ctx)
	cancel()
	for range ch {
	}
}

func TestIDFromAddress(t *testing.T) {
	tests := []struct{ name, addr, want string }{
		{name: "ipv4", addr: "10.0.0.1:8080", want: "10.0.0.1-8080"},
		{name: "ipv6", addr: "[::1]:80", want: "1--80"},
		{name: "hostname", addr: "Backend.local:443", want: "backend.local-443"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := idFromAddress(tt.addr); got != tt.want {
				t.Fatalf("idFromAddress(%q) = %q, want %q", tt.addr, got, tt.want)
			}
		})
	}
}

// A renewal leaves an endpoint's content alone (no re-translation per
// heartbeat); a health change does not, and is signalled.
func TestChangesIgnoreRenewals(t *testing.T) {
	st := openStore(t)
	r := newRegistry(t, st, newClock())
	ctx := t.Context()
	changes := r.Changes(ctx)
	if _, err := r.Register(ctx, Endpoint{Service: "api", ID: "a", Address: "10.0.0.1:80", Metadata: map[string]string{"x": "1", "y": "2"}}, 0); err != nil {
		t.Fatal(err)
	}
	<-changes
	read := func() string {
		kv, err := st.Get(ctx, key("api", "a"))
		if err != nil {
			t.Fatal(err)
		}
		return r.content(kv)
	}
	before := read()
	if _, err := r.Heartbeat(ctx, "api", "a", time.Minute); err != nil {
		t.Fatal(err)
	}
	if after := read(); after != before {
		t.Fatal("a heartbeat changed the endpoint's content")
	}
	if _, err := r.Renew(ctx, "api", "a", 0, Draining); err != nil {
		t.Fatal(err)
	}
	if read() == before {
		t.Fatal("a health change left the content unchanged")
	}
	select {
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Fatal("no change signalled for a health change")
	}
}
