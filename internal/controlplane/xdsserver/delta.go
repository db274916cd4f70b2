package xdsserver

import (
	"maps"
	"slices"
	"strconv"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// deltaWatch is one type's subscription on a delta stream and the versions
// the client holds. What the client holds is either base (exactly the
// resources of that type state, after a wildcard push: no per-stream copy of
// a large type) or the explicit map held. Resources the client NACKed count
// as held, so they are not sent again until their version changes.
type deltaWatch struct {
	wildcard   bool
	subscribed map[string]struct{}

	base *typeState
	held map[string]string

	started bool
	nonce   string
	version string
}

func (w *deltaWatch) heldVersion(name string) (string, bool) {
	if w.held != nil {
		v, ok := w.held[name]
		return v, ok
	}
	if w.base != nil {
		if e := w.base.byName[name]; e != nil {
			return e.version, true
		}
	}
	return "", false
}

// own turns a base into an explicit map before it is edited.
func (w *deltaWatch) own() {
	if w.held != nil {
		return
	}
	w.held = make(map[string]string)
	if w.base != nil {
		for n, e := range w.base.byName {
			w.held[n] = e.version
		}
	}
	w.base = nil
}

func (w *deltaWatch) heldNames() []string {
	if w.held != nil {
		return slices.Collect(maps.Keys(w.held))
	}
	if w.base != nil {
		return w.base.names
	}
	return nil
}

type deltaConn struct {
	*conn
	stream  deltaStream
	typeURL string
	watches map[string]*deltaWatch
	nonce   uint64
}

// serveDelta runs one delta (incremental) stream.
func (s *Server) serveDelta(stream deltaStream, typeURL string) error {
	first, err := stream.Recv()
	if err != nil {
		return streamEnd(err)
	}
	c, err := s.open(first.GetNode())
	if err != nil {
		return err
	}
	defer c.close()
	dc := &deltaConn{conn: c, stream: stream, typeURL: typeURL, watches: make(map[string]*deltaWatch)}

	reqs := make(chan *discoveryv3.DeltaDiscoveryRequest)
	errc := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	go receive(stream.Recv, reqs, errc, done)

	if err := dc.handle(first); err != nil {
		return err
	}
	ctx := stream.Context()
	for {
		select {
		case req := <-reqs:
			if err := dc.handle(req); err != nil {
				return err
			}
		case <-c.gs.changed:
			c.refresh()
			if err := dc.pushAll(); err != nil {
				return err
			}
		case err := <-errc:
			return streamEnd(err)
		case <-ctx.Done():
			return nil
		}
	}
}

func (dc *deltaConn) handle(req *discoveryv3.DeltaDiscoveryRequest) error {
	typeURL := req.GetTypeUrl()
	if dc.typeURL != "" {
		if typeURL == "" {
			typeURL = dc.typeURL
		} else if typeURL != dc.typeURL {
			dc.s.log.Debug("xds delta request for another type on a per-type stream", "stream", dc.id, "type", typeURL)
			return nil
		}
	}
	if typeURL == "" {
		dc.s.log.Debug("xds delta request without type url", "stream", dc.id)
		return nil
	}
	w := dc.watches[typeURL]
	first := w == nil
	if first {
		if len(dc.watches) >= maxWatches {
			return status.Errorf(codes.ResourceExhausted, "xds: more than %d resource types on one stream", maxWatches)
		}
		w = &deltaWatch{subscribed: make(map[string]struct{}), held: make(map[string]string, len(req.GetInitialResourceVersions()))}
		maps.Copy(w.held, req.GetInitialResourceVersions())
		dc.watches[typeURL] = w
	}
	// Delta requests carry subscription changes even when their nonce is
	// stale, so only the ACK/NACK meaning of a stale nonce is ignored.
	if nonce := req.GetResponseNonce(); nonce != "" && nonce == w.nonce {
		if d := req.GetErrorDetail(); d != nil {
			dc.nack(typeURL, w.version, d.GetMessage())
		} else {
			dc.ack(typeURL, w.version)
		}
	}
	sub, unsub := req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe()
	if first && len(sub) == 0 && fullState(typeURL) {
		w.wildcard = true
	}
	for _, n := range sub {
		if n == "*" {
			w.wildcard = true
			continue
		}
		w.subscribed[n] = struct{}{}
	}
	for _, n := range unsub {
		if n == "*" {
			w.wildcard = false
			continue
		}
		delete(w.subscribed, n)
	}
	if len(unsub) > 0 && !w.wildcard {
		// The client forgets what it unsubscribed from; if it subscribes again
		// it must be sent the resource again.
		w.own()
		for _, n := range unsub {
			delete(w.held, n)
		}
	}
	if first || len(sub) > 0 || len(unsub) > 0 {
		return dc.push(typeURL, w)
	}
	return nil
}

func (dc *deltaConn) pushAll() error {
	for _, t := range slices.SortedFunc(maps.Keys(dc.watches), compareTypes) {
		if err := dc.push(t, dc.watches[t]); err != nil {
			return err
		}
	}
	return nil
}

// push sends the resources whose version differs from what the client holds
// and the names it holds that are gone. Nothing is sent before the group's
// first snapshot.
func (dc *deltaConn) push(typeURL string, w *deltaWatch) error {
	if dc.gs.snap == nil {
		return nil
	}
	ts := dc.gs.types[typeURL]
	if w.wildcard && w.started && w.held == nil && w.base == ts {
		return nil
	}
	var (
		resources []*discoveryv3.Resource
		removed   []string
	)
	if w.wildcard {
		if ts != nil {
			for _, n := range ts.names {
				e := ts.byName[n]
				if v, ok := w.heldVersion(n); !ok || v != e.version {
					resources = append(resources, e.delta)
				}
			}
		}
		for _, n := range w.heldNames() {
			if ts == nil || ts.byName[n] == nil {
				removed = append(removed, n)
			}
		}
		// After this response the client holds exactly ts.
		w.base, w.held = ts, nil
	} else {
		w.own()
		for _, n := range slices.Sorted(maps.Keys(w.subscribed)) {
			var e *entry
			if ts != nil {
				e = ts.byName[n]
			}
			if e == nil {
				continue
			}
			if v, ok := w.held[n]; !ok || v != e.version {
				resources = append(resources, e.delta)
				w.held[n] = e.version
			}
		}
		for n := range w.held {
			_, sub := w.subscribed[n]
			switch {
			case !sub:
				delete(w.held, n)
			case ts == nil || ts.byName[n] == nil:
				removed = append(removed, n)
				delete(w.held, n)
			}
		}
	}
	// A wildcard subscriber is answered once even when the type is empty so
	// that it can finish initialising; otherwise silence means "no change".
	if len(resources) == 0 && len(removed) == 0 && (w.started || !w.wildcard) {
		return nil
	}
	slices.Sort(removed)
	dc.nonce++
	resp := &discoveryv3.DeltaDiscoveryResponse{
		SystemVersionInfo: versionOf(ts),
		Resources:         resources,
		TypeUrl:           typeURL,
		RemovedResources:  removed,
		Nonce:             strconv.FormatUint(dc.nonce, 36),
	}
	w.started, w.nonce, w.version = true, resp.Nonce, resp.SystemVersionInfo
	return dc.stream.Send(resp)
}
