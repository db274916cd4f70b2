package registry

import (
	"context"
	"errors"
	"maps"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// Changes signals every change to what Endpoints and List return, seen
// through the store's watch whichever replica made it: registrations,
// health and weight changes, deregistrations, expiries. Lease renewals alone
// do not signal, or every heartbeat of every agent would re-translate the
// mesh. Signals coalesce: one pending value stands for any number of changes,
// so a slow reader re-reads once. When the watch is lost (compaction, store
// hiccup) it re-lists and signals if anything differs. Subscribe before the
// first read so that nothing falls between the read and the subscription.
// The channel closes when ctx ends.
func (r *Registry) Changes(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	signal := func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	view, rev, err := r.contentView(ctx)
	go func() {
		defer close(ch)
		backoff := newBackoff()
		for ctx.Err() == nil {
			if err != nil {
				if !errors.Is(err, errWatchEnded) {
					r.log.Warn("registry: change watch list failed", "err", err)
				}
				if !backoff.wait(ctx) {
					return
				}
				var next map[string]string
				if next, rev, err = r.contentView(ctx); err == nil {
					if !maps.Equal(view, next) {
						signal()
					}
					view = next
				}
				continue
			}
			backoff.reset()
			for batch := range r.st.Watch(ctx, Prefix, rev) {
				changed := false
				for _, ev := range batch {
					k := ev.KV.Key
					if ev.Type == store.EventDelete {
						if _, ok := view[k]; ok {
							delete(view, k)
							changed = true
						}
						continue
					}
					if d := r.content(ev.KV); view[k] != d {
						view[k] = d
						changed = true
					}
				}
				if changed {
					signal()
				}
			}
			err = errWatchEnded
		}
	}()
	return ch
}

var errWatchEnded = errors.New("registry watch ended")

// contentView maps every record to its content (see content) and returns the
// store revision it reflects.
func (r *Registry) contentView(ctx context.Context) (map[string]string, int64, error) {
	kvs, rev, err := r.st.List(ctx, Prefix)
	if err != nil {
		return nil, 0, err
	}
	view := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		view[kv.Key] = r.content(kv)
	}
	return view, rev, nil
}

// content is a record without its lease fields, so that a renewal compares
// equal to what it renewed. An undecodable record has content "", the same
// as no record: readers skip it too.
func (r *Registry) content(kv store.KV) string {
	ep, err := decode(kv)
	if err != nil {
		return ""
	}
	ep.TTL, ep.ExpiresAt, ep.Revision = 0, time.Time{}, 0
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(ToProto(&ep))
	if err != nil {
		return ""
	}
	return string(b)
}

// Endpoints returns the lease-valid endpoints of service in the config
// model, for translation (translate.Options.ServiceEndpoints). It reads the
// store (bounded by a timeout, as translation has no context); on a store
// error it logs and returns nil, which translation publishes as "no
// endpoints" until the next change re-translates.
func (r *Registry) Endpoints(service string) []config.Endpoint {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	eps, err := r.List(ctx, service)
	if err != nil {
		r.log.Warn("registry: endpoints for translation", "service", service, "err", err)
		return nil
	}
	out := make([]config.Endpoint, 0, len(eps))
	for i := range eps {
		if ce, ok := configEndpoint(&eps[i]); ok {
			out = append(out, ce)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out
}

// configEndpoint maps a registry record to the config model. Every
// lease-valid endpoint goes through, unhealthy and draining ones too, so that
// proxies see their health (and drain) rather than a vanished address.
func configEndpoint(ep *Endpoint) (config.Endpoint, bool) {
	ce := config.Endpoint{Address: ep.Address, Weight: ep.Weight, Health: string(ep.Health)}
	if ep.Locality != (Locality{}) {
		ce.Locality = &config.Locality{Region: ep.Locality.Region, Zone: ep.Locality.Zone, SubZone: ep.Locality.SubZone}
	}
	return ce, true
}
