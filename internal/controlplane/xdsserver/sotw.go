package xdsserver

import (
	"cmp"
	"maps"
	"slices"
	"strconv"
	"strings"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// sotwWatch is one type's subscription on a SotW stream, and what the
// client was last sent for it. "Sent" includes responses the client NACKed:
// a type is sent again only when what it would carry differs from the last
// response, which is what stops the re-send loop after a NACK.
type sotwWatch struct {
	wildcard bool
	names    map[string]struct{}

	started bool              // a response was sent on this watch
	nonce   string            // of the latest response; older nonces are stale
	version string            // version_info of the latest response
	sentTS  *typeState        // wildcard: the type state of the latest response
	sent    map[string]string // named: name → version of the latest response
}

type sotwConn struct {
	*conn
	stream  sotwStream
	typeURL string // fixed by a per-type service; "" on ADS
	watches map[string]*sotwWatch
	nonce   uint64
}

// serveSotW runs one state-of-the-world stream. typeURL is the service's
// type for per-type services and "" for ADS.
func (s *Server) serveSotW(stream sotwStream, typeURL string) error {
	first, err := stream.Recv()
	if err != nil {
		return streamEnd(err)
	}
	c, err := s.open(first.GetNode())
	if err != nil {
		return err
	}
	defer c.close()
	sc := &sotwConn{conn: c, stream: stream, typeURL: typeURL, watches: make(map[string]*sotwWatch)}

	reqs := make(chan *discoveryv3.DiscoveryRequest)
	errc := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	go receive(stream.Recv, reqs, errc, done)

	if err := sc.handle(first); err != nil {
		return err
	}
	ctx := stream.Context()
	for {
		select {
		case req := <-reqs:
			if err := sc.handle(req); err != nil {
				return err
			}
		case <-c.gs.changed:
			c.refresh()
			if err := sc.pushAll(); err != nil {
				return err
			}
		case err := <-errc:
			return streamEnd(err)
		case <-ctx.Done():
			return nil
		}
	}
}

func (sc *sotwConn) handle(req *discoveryv3.DiscoveryRequest) error {
	typeURL := req.GetTypeUrl()
	if sc.typeURL != "" {
		if typeURL == "" {
			typeURL = sc.typeURL
		} else if typeURL != sc.typeURL {
			sc.s.log.Debug("xds request for another type on a per-type stream", "stream", sc.id, "type", typeURL)
			return nil
		}
	}
	if typeURL == "" {
		sc.s.log.Debug("xds request without type url", "stream", sc.id)
		return nil
	}
	w := sc.watches[typeURL]
	if nonce := req.GetResponseNonce(); nonce != "" {
		if w == nil || nonce != w.nonce {
			// Stale: the client has not seen our latest response yet and will
			// answer it; acting on this request could re-send or mis-attribute.
			return nil
		}
		if d := req.GetErrorDetail(); d != nil {
			sc.nack(typeURL, w.version, d.GetMessage())
		} else {
			sc.ack(typeURL, req.GetVersionInfo())
		}
	} else if w != nil {
		// A request without a nonce on a type already served is a fresh
		// subscription: the client holds nothing for it any more.
		w.started, w.sentTS, w.sent = false, nil, nil
	}
	if w == nil {
		if len(sc.watches) >= maxWatches {
			return status.Errorf(codes.ResourceExhausted, "xds: more than %d resource types on one stream", maxWatches)
		}
		w = &sotwWatch{}
		sc.watches[typeURL] = w
	}
	w.setNames(typeURL, req.GetResourceNames())
	return sc.push(typeURL, w)
}

// setNames applies a request's resource_names. For LDS and CDS an empty list
// means every resource; "*" means every resource for any type.
func (w *sotwWatch) setNames(typeURL string, names []string) {
	w.wildcard = len(names) == 0 && fullState(typeURL)
	if len(names) == 0 {
		w.names = nil
		return
	}
	m := make(map[string]struct{}, len(names))
	for _, n := range names {
		if n == "*" {
			w.wildcard = true
			continue
		}
		m[n] = struct{}{}
	}
	w.names = m
}

func (sc *sotwConn) pushAll() error {
	types := slices.SortedFunc(maps.Keys(sc.watches), compareTypes)
	for _, t := range types {
		if err := sc.push(t, sc.watches[t]); err != nil {
			return err
		}
	}
	return nil
}

// push sends the watch's type if what the client would receive differs from
// what it was last sent. Nothing is sent before the group's first snapshot.
func (sc *sotwConn) push(typeURL string, w *sotwWatch) error {
	if sc.gs.snap == nil {
		return nil
	}
	ts := sc.gs.types[typeURL]
	var resources []*anypb.Any
	if w.wildcard {
		if w.started && w.sentTS == ts {
			return nil
		}
		if ts == nil && !w.started && !fullState(typeURL) {
			return nil
		}
		if ts != nil {
			resources = ts.sotw
		}
		w.sentTS, w.sent = ts, nil
	} else {
		var sent map[string]string
		if ts != nil {
			for n := range w.names {
				if e := ts.byName[n]; e != nil {
					if sent == nil {
						sent = make(map[string]string, len(w.names))
					}
					sent[n] = e.version
				}
			}
		}
		if w.started && maps.Equal(sent, w.sent) {
			return nil
		}
		// Absent named RDS/EDS/SDS resources may still appear: wait rather
		// than answer with nothing. For LDS/CDS an empty answer tells the
		// client (gRPC proxyless) at once that its listener does not exist.
		if !w.started && len(sent) == 0 && !fullState(typeURL) {
			return nil
		}
		names := slices.Sorted(maps.Keys(sent))
		resources = make([]*anypb.Any, len(names))
		for i, n := range names {
			resources[i] = ts.byName[n].sotw
		}
		w.sentTS, w.sent = nil, sent
	}
	sc.nonce++
	resp := &discoveryv3.DiscoveryResponse{
		VersionInfo: versionOf(ts),
		Resources:   resources,
		TypeUrl:     typeURL,
		Nonce:       strconv.FormatUint(sc.nonce, 36),
	}
	w.started, w.nonce, w.version = true, resp.Nonce, resp.VersionInfo
	return sc.stream.Send(resp)
}

// compareTypes orders types by typeRank, then by name.
func compareTypes(a, b string) int {
	return cmp.Or(cmp.Compare(typeRank(a), typeRank(b)), strings.Compare(a, b))
}
