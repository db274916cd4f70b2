package registry

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkEndpoints is the read translation makes per registry-backed
// cluster, on bbolt with 100 endpoints in the service.
func BenchmarkEndpoints(b *testing.B) {
	st := openStoreB(b)
	r := New(st, Options{})
	for i := range 100 {
		if _, err := r.Register(b.Context(), Endpoint{Service: "shop", Address: fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250)}, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if eps := r.Endpoints("shop"); len(eps) != 100 {
			b.Fatalf("%d endpoints", len(eps))
		}
	}
}

// BenchmarkRenew is one heartbeat (a read and a conditional write) on bbolt.
func BenchmarkRenew(b *testing.B) {
	st := openStoreB(b)
	r := New(st, Options{})
	if _, err := r.Register(b.Context(), Endpoint{Service: "shop", ID: "a", Address: "10.0.0.1:8080"}, time.Minute); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Renew(b.Context(), "shop", "a", 0, ""); err != nil {
			b.Fatal(err)
		}
	}
}
