package registry

import (
	"context"
	"sort"

	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// Changes signals every change to the registry seen through the store's
// watch, whichever replica made it (registrations, heartbeats, health
// changes, deregistrations, expiries). Signals coalesce: one pending value
// stands for any number of changes, so a slow reader re-reads once. After the
// watch is lost (compaction, store hiccup) it re-subscribes and signals,
// since changes may have been missed. Subscribe before the first read so
// that nothing falls between the read and the subscription. The channel
// closes when ctx ends.
func (r *Registry) Changes(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	signal := func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	_, rev, err := r.st.List(ctx, Prefix)
	go func() {
		defer close(ch)
		backoff := newBackoff()
		for ctx.Err() == nil {
			if err != nil {
				r.log.Warn("registry: change watch list failed", "err", err)
				if !backoff.wait(ctx) {
					return
				}
				_, rev, err = r.st.List(ctx, Prefix)
				if err == nil {
					signal()
				}
				continue
			}
			backoff.reset()
			for range r.st.Watch(ctx, Prefix, rev) {
				signal()
			}
			if ctx.Err() != nil {
				return
			}
			// The watch ended under us: re-list for a fresh revision.
			if !backoff.wait(ctx) {
				return
			}
			_, rev, err = r.st.List(ctx, Prefix)
			if err == nil {
				signal()
			}
		}
	}()
	return ch
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
