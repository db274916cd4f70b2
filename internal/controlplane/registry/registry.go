// Package registry owns MeshKit's service registry: endpoints of named
// services, each held by a TTL lease that a heartbeat renews, with health,
// locality and weight. Records live in a store.Store under
// /registry/<service>/<id>, so that every MeshKit replica sharing the store
// sees the same endpoints; one replica at a time (the leader of the
// "registry-expiry" election) deletes expired records, and every reader
// ignores expired records in the meantime.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// Lease bounds. Envoy-style agents heartbeat at a third of the TTL.
const (
	DefaultTTL = 30 * time.Second
	MinTTL     = time.Second
	MaxTTL     = time.Hour
)

// Prefix is where records live in the store.
const Prefix = "/registry/"

// ExpiryElection is the store election whose leader sweeps expired leases.
const ExpiryElection = "registry-expiry"

// storeTimeout bounds the store calls made without a caller's context
// (Endpoints is called from translation, which has none).
const storeTimeout = 5 * time.Second

// maxUpdateAttempts bounds the read-modify-write retries of Heartbeat and
// SetHealth when another writer keeps changing the same record.
const maxUpdateAttempts = 8

// Health is an endpoint's health as the data plane should treat it.
type Health string

const (
	Healthy   Health = config.HealthHealthy
	Unhealthy Health = config.HealthUnhealthy
	// Draining endpoints take no new requests; in-flight ones finish.
	Draining Health = config.HealthDraining
)

// Locality places an endpoint for zone-aware balancing.
type Locality struct {
	Region, Zone, SubZone string
}

// Endpoint is one registered instance of a service.
type Endpoint struct {
	Service string
	// ID is unique within the service; Register derives it from Address when
	// empty.
	ID      string
	Address string // host:port
	// Weight is 1..128; 0 at Register means 1.
	Weight   uint32
	Locality Locality
	// Health is "" (read as Healthy) or one of the Health constants.
	Health   Health
	Metadata map[string]string

	// TTL and ExpiresAt describe the lease; set by the registry.
	TTL       time.Duration
	ExpiresAt time.Time
	// Revision is the store's mod revision of the record.
	Revision int64
}

// Lease is what Register and Heartbeat return.
type Lease struct {
	Service, ID string
	TTL         time.Duration
	ExpiresAt   time.Time
}

// Service summarises one service's lease-valid endpoints.
type Service struct {
	Name      string
	Endpoints int
	Healthy   int
}

// Options configures a Registry; the zero value is usable.
type Options struct {
	// Now is the clock (time.Now when nil); tests move it to expire leases.
	Now func() time.Time
	Log *slog.Logger
	// SweepInterval caps how long the expiry leader waits between sweeps
	// when it sees no change (default 10 s); it also wakes at the earliest
	// lease expiry and on every store change.
	SweepInterval time.Duration
}

// Registry is safe for concurrent use. It keeps no state of its own besides
// its options: the store is the truth, so replicas never disagree.
type Registry struct {
	st    store.Store
	now   func() time.Time
	log   *slog.Logger
	sweep time.Duration
}

// New returns a registry over st, which it does not own (the caller closes
// it).
func New(st store.Store, o Options) *Registry {
	r := &Registry{st: st, now: o.Now, log: o.Log, sweep: o.SweepInterval}
	if r.now == nil {
		r.now = time.Now
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.sweep <= 0 {
		r.sweep = 10 * time.Second
	}
	return r
}

// Register validates ep and stores it under a fresh lease of ttl (0 means
// DefaultTTL), replacing any record with the same service and id.
func (r *Registry) Register(ctx context.Context, ep Endpoint, ttl time.Duration) (Lease, error) {
	if ttl == 0 {
		ttl = DefaultTTL
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
	if err := validate(&ep, ttl); err != nil {
		return Lease{}, err
	}
	ep.TTL = ttl
	ep.ExpiresAt = r.now().Add(ttl)
	val, err := encode(&ep)
	if err != nil {
		return Lease{}, fmt.Errorf("registry: register: %w", err)
	}
	rev, err := r.st.Put(ctx, key(ep.Service, ep.ID), val, -1)
	if err != nil {
		return Lease{}, fmt.Errorf("registry: register %s/%s: %w", ep.Service, ep.ID, err)
	}
	ep.Revision = rev
	return ep.lease(), nil
}

// Heartbeat extends the lease of service/id by ttl (0 keeps the current TTL).
// An unknown or already expired endpoint is store.ErrNotFound: the agent must
// register again, since the endpoint may have left EDS in between.
func (r *Registry) Heartbeat(ctx context.Context, service, id string, ttl time.Duration) (Lease, error) {
	ep, err := r.Renew(ctx, service, id, ttl, "")
	if err != nil {
		return Lease{}, err
	}
	return ep.lease(), nil
}

// Renew is Heartbeat that may also report a new health (h != "") in the same
// write, and returns the endpoint as stored: one read and one write per
// heartbeat, which matters when thousands of agents heartbeat through etcd.
func (r *Registry) Renew(ctx context.Context, service, id string, ttl time.Duration, h Health) (Endpoint, error) {
	if ttl != 0 {
		if err := checkTTL(ttl); err != nil {
			return Endpoint{}, err
		}
	}
	if h != "" {
		if err := checkHealth(h); err != nil {
			return Endpoint{}, err
		}
	}
	ep, err := r.update(ctx, service, id, func(ep *Endpoint) {
		if ttl != 0 {
			ep.TTL = ttl
		}
		if h != "" {
			ep.Health = h
		}
		ep.ExpiresAt = r.now().Add(ep.TTL)
	})
	if err != nil {
		return Endpoint{}, fmt.Errorf("registry: heartbeat %s/%s: %w", service, id, err)
	}
	return ep, nil
}

// SetHealth changes the health of service/id without touching its lease.
func (r *Registry) SetHealth(ctx context.Context, service, id string, h Health) error {
	if err := checkHealth(h); err != nil {
		return err
	}
	if _, err := r.update(ctx, service, id, func(ep *Endpoint) { ep.Health = h }); err != nil {
		return fmt.Errorf("registry: set health of %s/%s: %w", service, id, err)
	}
	return nil
}

// Deregister removes service/id; an unknown endpoint is store.ErrNotFound.
func (r *Registry) Deregister(ctx context.Context, service, id string) error {
	if err := checkName("service", service); err != nil {
		return err
	}
	if err := checkName("id", id); err != nil {
		return err
	}
	if err := r.st.Delete(ctx, key(service, id), -1); err != nil {
		return fmt.Errorf("registry: deregister %s/%s: %w", service, id, err)
	}
	return nil
}

// Get returns the lease-valid endpoint service/id.
func (r *Registry) Get(ctx context.Context, service, id string) (Endpoint, error) {
	ep, err := r.get(ctx, service, id)
	if err != nil {
		return Endpoint{}, fmt.Errorf("registry: %s/%s: %w", service, id, err)
	}
	return ep, nil
}

// List returns the lease-valid endpoints of service, sorted by id.
func (r *Registry) List(ctx context.Context, service string) ([]Endpoint, error) {
	if err := checkName("service", service); err != nil {
		return nil, err
	}
	eps, _, err := r.list(ctx, Prefix+service+"/")
	if err != nil {
		return nil, fmt.Errorf("registry: list %s: %w", service, err)
	}
	return eps, nil
}

// Services returns every service with at least one lease-valid endpoint,
// sorted by name.
func (r *Registry) Services(ctx context.Context) ([]Service, error) {
	eps, _, err := r.list(ctx, Prefix)
	if err != nil {
		return nil, fmt.Errorf("registry: list services: %w", err)
	}
	var out []Service
	for _, ep := range eps {
		if len(out) == 0 || out[len(out)-1].Name != ep.Service {
			out = append(out, Service{Name: ep.Service})
		}
		s := &out[len(out)-1]
		s.Endpoints++
		if ep.Health == Healthy {
			s.Healthy++
		}
	}
	return out, nil
}

func (r *Registry) get(ctx context.Context, service, id string) (Endpoint, error) {
	if err := checkName("service", service); err != nil {
		return Endpoint{}, err
	}
	if err := checkName("id", id); err != nil {
		return Endpoint{}, err
	}
	kv, err := r.st.Get(ctx, key(service, id))
	if err != nil {
		return Endpoint{}, err
	}
	ep, err := decode(kv)
	if err != nil {
		return Endpoint{}, err
	}
	if !r.now().Before(ep.ExpiresAt) {
		return Endpoint{}, fmt.Errorf("lease expired at %s: %w", ep.ExpiresAt.UTC().Format(time.RFC3339), store.ErrNotFound)
	}
	return ep, nil
}

// update is a compare-and-swap loop: a concurrent writer (a second replica,
// the expiry sweeper) makes the Put fail with ErrConflict and we re-read.
func (r *Registry) update(ctx context.Context, service, id string, change func(*Endpoint)) (Endpoint, error) {
	for range maxUpdateAttempts {
		ep, err := r.get(ctx, service, id)
		if err != nil {
			return Endpoint{}, err
		}
		change(&ep)
		val, err := encode(&ep)
		if err != nil {
			return Endpoint{}, err
		}
		rev, err := r.st.Put(ctx, key(service, id), val, ep.Revision)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return Endpoint{}, err
		}
		ep.Revision = rev
		return ep, nil
	}
	return Endpoint{}, fmt.Errorf("gave up after %d concurrent updates: %w", maxUpdateAttempts, store.ErrConflict)
}

// list reads every record under prefix, dropping expired ones and logging
// (not failing on) undecodable ones so that one bad record written by a
// newer MeshKit cannot hide a whole service. It returns the store revision.
func (r *Registry) list(ctx context.Context, prefix string) ([]Endpoint, int64, error) {
	kvs, rev, err := r.st.List(ctx, prefix)
	if err != nil {
		return nil, 0, err
	}
	now := r.now()
	eps := make([]Endpoint, 0, len(kvs))
	for _, kv := range kvs {
		ep, err := decode(kv)
		if err != nil {
			r.log.Warn("registry: skipping undecodable record", "key", kv.Key, "err", err)
			continue
		}
		if !now.Before(ep.ExpiresAt) {
			continue
		}
		eps = append(eps, ep)
	}
	// Keys sort by service then id, except where a service name is a prefix
	// of another's ("a" / "a-b"); sort by the fields to be exact.
	sort.Slice(eps, func(i, j int) bool {
		if eps[i].Service != eps[j].Service {
			return eps[i].Service < eps[j].Service
		}
		return eps[i].ID < eps[j].ID
	})
	return eps, rev, nil
}

func (ep *Endpoint) lease() Lease {
	return Lease{Service: ep.Service, ID: ep.ID, TTL: ep.TTL, ExpiresAt: ep.ExpiresAt}
}

func key(service, id string) string { return Prefix + service + "/" + id }

// idFromAddress makes re-registering the same address (an agent restarting)
// replace its record instead of doubling the endpoint until the old lease
// runs out.
func idFromAddress(addr string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(addr) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
			b.WriteRune(c)
		default:
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String(), "-._")
}

// The stored form is the API's Endpoint message in the protobuf binary
// encoding: decoding it is several times cheaper than protojson (Endpoints
// decodes every record of a service on each translation), a newer MeshKit
// may add fields, and `omnictl get endpoints` is the readable view.
func encode(ep *Endpoint) ([]byte, error) {
	b, err := proto.Marshal(ToProto(ep))
	if err != nil {
		return nil, fmt.Errorf("encode %s/%s: %w", ep.Service, ep.ID, err)
	}
	return b, nil
}

func decode(kv store.KV) (Endpoint, error) {
	var m meshkitv1.Endpoint
	if err := proto.Unmarshal(kv.Value, &m); err != nil {
		return Endpoint{}, fmt.Errorf("record %s: %w", kv.Key, err)
	}
	ep := FromProto(&m)
	ep.Revision = kv.Revision
	return ep, nil
}

// ToProto converts an Endpoint to its API message.
func ToProto(ep *Endpoint) *meshkitv1.Endpoint {
	m := &meshkitv1.Endpoint{
		Service:  ep.Service,
		Id:       ep.ID,
		Address:  ep.Address,
		Weight:   ep.Weight,
		Health:   healthToProto(ep.Health),
		Metadata: ep.Metadata,
	}
	if ep.Locality != (Locality{}) {
		m.Locality = &meshkitv1.Locality{Region: ep.Locality.Region, Zone: ep.Locality.Zone, SubZone: ep.Locality.SubZone}
	}
	if ep.TTL != 0 {
		m.Ttl = durationpb.New(ep.TTL)
	}
	if !ep.ExpiresAt.IsZero() {
		m.LeaseExpiresAt = timestamppb.New(ep.ExpiresAt)
	}
	return m
}

// FromProto converts an API message to an Endpoint (Revision stays 0).
func FromProto(m *meshkitv1.Endpoint) Endpoint {
	ep := Endpoint{
		Service:  m.GetService(),
		ID:       m.GetId(),
		Address:  m.GetAddress(),
		Weight:   m.GetWeight(),
		Health:   HealthFromProto(m.GetHealth()),
		Metadata: m.GetMetadata(),
	}
	if l := m.GetLocality(); l != nil {
		ep.Locality = Locality{Region: l.GetRegion(), Zone: l.GetZone(), SubZone: l.GetSubZone()}
	}
	if m.GetTtl() != nil {
		ep.TTL = m.GetTtl().AsDuration()
	}
	if m.GetLeaseExpiresAt() != nil {
		ep.ExpiresAt = m.GetLeaseExpiresAt().AsTime()
	}
	return ep
}

func healthToProto(h Health) meshkitv1.Health {
	switch h {
	case Healthy:
		return meshkitv1.Health_HEALTHY
	case Unhealthy:
		return meshkitv1.Health_UNHEALTHY
	case Draining:
		return meshkitv1.Health_DRAINING
	}
	return meshkitv1.Health_HEALTH_UNSPECIFIED
}

// HealthFromProto maps the API enum; HEALTH_UNSPECIFIED becomes "" (which
// Register reads as Healthy and Heartbeat as "leave unchanged").
func HealthFromProto(h meshkitv1.Health) Health {
	switch h {
	case meshkitv1.Health_HEALTHY:
		return Healthy
	case meshkitv1.Health_UNHEALTHY:
		return Unhealthy
	case meshkitv1.Health_DRAINING:
		return Draining
	}
	return ""
}
