package lb

import (
	"fmt"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/endpoint"
)

// FuzzParsePolicy checks that any accepted name round-trips through String.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{"round_robin", "MAGLEV", "envoy.load_balancing_policies.ring_hash", "", "ring-hash"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePolicy(s)
		if err != nil {
			return
		}
		q, err := ParsePolicy(p.String())
		if err != nil || q != p {
			t.Fatalf("%q parsed to %v, whose name parses to %v, %v", s, p, q, err)
		}
	})
}

// FuzzBalancers builds every policy from fuzzed weights and availability
// (one byte per host: low 5 bits weight, top bits down/ejected) and checks
// the invariants a router relies on: a pick is never nil, never an
// unavailable host outside panic mode, and the ring's binary search agrees
// with a linear scan.
func FuzzBalancers(f *testing.F) {
	f.Add([]byte{1, 1, 1}, uint64(0))
	f.Add([]byte{1, 0x81, 0x41, 31}, uint64(1<<63))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 2}, ^uint64(0))
	f.Fuzz(func(t *testing.T, spec []byte, hash uint64) {
		if len(spec) == 0 || len(spec) > 64 {
			return
		}
		until := time.Now().Add(time.Hour)
		eps := make([]*endpoint.Endpoint, len(spec))
		avail := 0
		for i, b := range spec {
			eps[i] = endpoint.New(fmt.Sprintf("10.1.%d.%d:443", i/250, i%250), uint32(b&31))
			if b&0x80 != 0 {
				eps[i].SetHealthy(false)
			} else if b&0x40 != 0 {
				eps[i].Eject(until)
			} else {
				avail++
			}
		}
		panicMode := 2*avail < len(eps)
		opts := Options{MinRingSize: 64, MaxRingSize: 4096, MaglevTableSize: 251}
		for _, p := range allPolicies {
			b, err := New(p, eps, opts)
			if err != nil {
				t.Fatalf("New(%v): %v", p, err)
			}
			for i := range 8 {
				e := b.Pick(&Context{Hash: hash + uint64(i), HasHash: i%2 == 0})
				if e == nil {
					t.Fatalf("%v: nil pick", p)
				}
				if !panicMode && !e.Available(time.Now()) {
					t.Fatalf("%v: picked unavailable %s with %d of %d available", p, e.Address, avail, len(eps))
				}
			}
			if r, ok := b.(*ringHash); ok {
				want := 0
				for want < len(r.hashes) && r.hashes[want] < hash {
					want++
				}
				if want == len(r.hashes) {
					want = 0
				}
				if got := r.lookup(hash); got != want {
					t.Fatalf("ring lookup(%#x) = %d, linear scan %d", hash, got, want)
				}
			}
		}
	})
}
