package registry

import (
	"maps"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/controlplane/store"
)

// FuzzEndpointRoundTrip: whatever a client sends, validation either rejects
// it or the record it stores encodes and decodes back to the same endpoint
// (proto refuses invalid UTF-8: validation must keep it out).
func FuzzEndpointRoundTrip(f *testing.F) {
	f.Add("shop", "", "10.0.0.1:8080", uint32(0), "eu", "eu-1", "version", "v2", int64(30000), "")
	f.Add("a.b_c-d", "id-1", "[::1]:443", uint32(128), "", "", "", "", int64(1000), "draining")
	f.Add("x", "y", "host.example:65535", uint32(7), "r\xff", "z", "k", "\xfe", int64(3600000), "unhealthy")
	f.Fuzz(func(t *testing.T, service, id, address string, weight uint32, region, zone, metaK, metaV string, ttlMs int64, health string) {
		ep := Endpoint{Service: service, ID: id, Address: address, Weight: weight, Locality: Locality{Region: region, Zone: zone}, Health: Health(health)}
		if metaK != "" || metaV != "" {
			ep.Metadata = map[string]string{metaK: metaV}
		}
		if ep.Weight == 0 {
			ep.Weight = 1
		}
		if ep.Health == "" {
			ep.Health = Healthy
		}
		if ep.ID == "" {
			ep.ID = idFromAddress(ep.Address)
		}
		ttl := time.Duration(ttlMs) * time.Millisecond
		if validate(&ep, ttl) != nil {
			return
		}
		ep.TTL = ttl
		ep.ExpiresAt = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
		val, err := encode(&ep)
		if err != nil {
			t.Fatalf("validated endpoint does not encode: %v", err)
		}
		got, err := decode(store.KV{Key: key(ep.Service, ep.ID), Value: val, Revision: 9})
		if err != nil {
			t.Fatalf("stored record does not decode: %v", err)
		}
		ep.Revision = 9
		if got.Service != ep.Service || got.ID != ep.ID || got.Address != ep.Address || got.Weight != ep.Weight ||
			got.Locality != ep.Locality || got.Health != ep.Health || !maps.Equal(got.Metadata, ep.Metadata) ||
			got.TTL != ep.TTL || !got.ExpiresAt.Equal(ep.ExpiresAt) || got.Revision != ep.Revision {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, ep)
		}
	})
}

// FuzzDecode: a record in the store may be anything (written by another
// MeshKit version, or by hand with etcdctl); reading it must not panic.
func FuzzDecode(f *testing.F) {
	for _, ep := range []Endpoint{
		{Service: "shop", ID: "a", Address: "10.0.0.1:80", Weight: 1, Health: Healthy, TTL: time.Minute, ExpiresAt: time.Unix(1e9, 0)},
		{Service: "s", ID: "b", Address: "h:1", Locality: Locality{Region: "eu"}, Metadata: map[string]string{"k": "v"}},
	} {
		b, err := encode(&ep)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x42, 0x02, 0x08, 0xff}) // ttl with a truncated varint
	f.Fuzz(func(t *testing.T, value []byte) {
		_, _ = decode(store.KV{Key: "/registry/x/y", Value: value})
	})
}
