package xdsserver

import (
	"slices"
	"strconv"
	"strings"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// deltaWatch is one type's subscription on a delta stream and the versions
// the client holds. What the client holds is either base (exactly the
// resources of that type state, after a wildcard push: no per-stream copy of
// a large type) or the explicit sorted list held. Resources the client
// NACKed count as held, so they are not sent again until their version
// changes. Sorted slices rather than maps: at 10,000 streams with a handful
// of names each, maps cost several times the memory.
type deltaWatch struct {
	typeURL    string
	wildcard   bool
	subscribed []string // sorted, unique

	base     *typeState
	held     []held // sorted by name; meaningful when explicit
	explicit bool

	started bool
	nonce   string
	version string
	waiting bool // the latest response is not yet ACKed or NACKed
}

type held struct{ name, version string }

func findHeld(hs []held, name string) (int, bool) {
	return slices.BinarySearchFunc(hs, name, func(h held, n string) int { return strings.Compare(h.name, n) })
}

func (w *deltaWatch) heldVersion(name string) (string, bool) {
	if w.explicit {
		if i, ok := findHeld(w.held, name); ok {
			return w.held[i].version, true
		}
		return "", false
	}
	if w.base != nil {
		if e := w.base.byName[name]; e != nil {
			return e.version, true
		}
	}
	return "", false
}

// own turns a base into an explicit list before it is edited.
func (w *deltaWatch) own() {
	if w.explicit {
		return
	}
	w.explicit, w.held = true, nil
	if w.base != nil {
		w.held = make([]held, len(w.base.names))
		for i, n := range w.base.names {
			w.held[i] = held{n, w.base.byName[n].version}
		}
	}
	w.base = nil
}

func (w *deltaWatch) subscribe(n string) {
	if i, ok := slices.BinarySearch(w.subscribed, n); !ok {
		w.subscribed = slices.Insert(w.subscribed, i, n)
	}
}

func (w *deltaWatch) unsubscribe(n string) {
	if i, ok := slices.BinarySearch(w.subscribed, n); ok {
		w.subscribed = slices.Delete(w.subscribed, i, i+1)
	}
	if !w.wildcard {
		// The client forgets what it unsubscribed from; if it subscribes again
		// it must be sent the resource again.
		w.own()
		if i, ok := findHeld(w.held, n); ok {
			w.held = slices.Delete(w.held, i, i+1)
		}
	}
}

type deltaConn struct {
	*conn
	stream interface {
		Send(*discoveryv3.DeltaDiscoveryResponse) error
	}
	typeURL string
	watches []*deltaWatch // in push order (compareTypes)
	nonce   uint64
}

// serveDelta runs one delta (incremental) stream.
func (s *Server) serveDelta(stream deltaStream, typeURL string) error {
	first, err := stream.Recv()
	if err != nil {
		return streamEnd(err)
	}
	c, err := s.open(first.GetNode(), peerOf(stream.Context()))
	if err != nil {
		return err
	}
	dc := &deltaConn{conn: c, stream: stream, typeURL: typeURL}

	dc.start(dc.pushAll)
	return c.runGRPC(func() error { return serve(c, stream.Recv, first, dc.handle) })
}

func (dc *deltaConn) handle(req *discoveryv3.DeltaDiscoveryRequest) error {
	typeURL, ok := dc.requestType(dc.typeURL, req.GetTypeUrl())
	if !ok || dc.secretsWithheld(typeURL) {
		return nil
	}
	w := dc.watch(typeURL)
	first := w == nil
	if first {
		if len(dc.watches) >= maxWatches {
			return status.Errorf(codes.ResourceExhausted, "xds: more than %d resource types on one stream", maxWatches)
		}
		w = &deltaWatch{typeURL: canonicalType(typeURL), explicit: true}
		if irv := req.GetInitialResourceVersions(); len(irv) > 0 {
			w.held = make([]held, 0, len(irv))
			ts := dc.currentType(w.typeURL)
			for n, v := range irv {
				w.held = append(w.held, held{canonicalName(ts, n), v})
			}
		}
		slices.SortFunc(w.held, func(a, b held) int { return strings.Compare(a.name, b.name) })
		i, _ := slices.BinarySearchFunc(dc.watches, typeURL, func(w *deltaWatch, t string) int { return compareTypes(w.typeURL, t) })
		dc.watches = slices.Insert(dc.watches, i, w)
	}
	// Delta requests carry subscription changes even when their nonce is
	// stale, so only the ACK/NACK meaning of a stale nonce is ignored.
	if nonce := req.GetResponseNonce(); nonce != "" && nonce == w.nonce {
		dc.answered(&w.waiting)
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
	if len(sub) > 0 {
		ts := dc.currentType(w.typeURL)
		w.subscribed = slices.Grow(w.subscribed, len(sub))
		for _, n := range sub {
			if n == "*" {
				w.wildcard = true
				continue
			}
			w.subscribe(canonicalName(ts, n))
		}
	}
	for _, n := range unsub {
		if n == "*" {
			w.wildcard = false
			continue
		}
		w.unsubscribe(n)
	}
	if first || len(sub) > 0 || len(unsub) > 0 {
		return dc.push(w)
	}
	return nil
}

// currentType is the type's state in the snapshot the stream last read.
func (dc *deltaConn) currentType(typeURL string) *typeState {
	if dc.gs == nil {
		return nil
	}
	return dc.gs.types[typeURL]
}

func (dc *deltaConn) watch(typeURL string) *deltaWatch {
	for _, w := range dc.watches {
		if w.typeURL == typeURL {
			return w
		}
	}
	return nil
}

func (dc *deltaConn) pushAll() error {
	for _, w := range dc.watches {
		if err := dc.push(w); err != nil {
			return err
		}
	}
	return nil
}

// push sends the resources whose version differs from what the client holds
// and the names it holds that are gone. Nothing is sent before the group's
// first snapshot.
func (dc *deltaConn) push(w *deltaWatch) error {
	if dc.gs.snap == nil {
		return nil
	}
	typeURL := w.typeURL
	ts := dc.gs.types[typeURL]
	if w.wildcard && w.started && !w.explicit && w.base == ts {
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
		if w.explicit {
			for _, h := range w.held {
				if ts == nil || ts.byName[h.name] == nil {
					removed = append(removed, h.name)
				}
			}
		} else if w.base != nil {
			for _, n := range w.base.names {
				if ts == nil || ts.byName[n] == nil {
					removed = append(removed, n)
				}
			}
		}
		// After this response the client holds exactly ts.
		w.base, w.held, w.explicit = ts, nil, false
	} else {
		w.own()
		next := make([]held, 0, len(w.subscribed))
		for _, n := range w.subscribed {
			var e *entry
			if ts != nil {
				e = ts.byName[n]
			}
			if e == nil {
				continue
			}
			if i, ok := findHeld(w.held, n); !ok || w.held[i].version != e.version {
				resources = append(resources, e.delta)
			}
			next = append(next, held{n, e.version})
		}
		for _, h := range w.held {
			if _, sub := slices.BinarySearch(w.subscribed, h.name); sub && (ts == nil || ts.byName[h.name] == nil) {
				removed = append(removed, h.name)
			}
		}
		if len(resources) > 0 || len(removed) > 0 || len(next) != len(w.held) {
			w.held = next
		}
	}
	// A wildcard subscriber is answered once even when the type is empty so
	// that it can finish initialising; otherwise silence means "no change".
	if len(resources) == 0 && len(removed) == 0 && (w.started || !w.wildcard) {
		return nil
	}
	dc.nonce++
	resp := &discoveryv3.DeltaDiscoveryResponse{
		SystemVersionInfo: versionOf(ts),
		Resources:         resources,
		TypeUrl:           typeURL,
		RemovedResources:  removed,
		Nonce:             strconv.FormatUint(dc.nonce, 36),
	}
	w.started, w.nonce, w.version = true, resp.Nonce, resp.SystemVersionInfo
	dc.sent(&w.waiting)
	return dc.stream.Send(resp)
}
