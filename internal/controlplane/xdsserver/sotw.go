package xdsserver

import (
	"cmp"
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
	typeURL  string
	wildcard bool
	names    []string // sorted, unique

	started bool       // a response was sent on this watch
	nonce   string     // of the latest response; older nonces are stale
	version string     // version_info of the latest response
	sentTS  *typeState // wildcard: the type state of the latest response
	sent    []held     // named: names and versions of the latest response, sorted
	waiting bool       // the latest response is not yet ACKed or NACKed
}

type sotwConn struct {
	*conn
	stream interface {
		Send(*discoveryv3.DiscoveryResponse) error
	}
	typeURL string       // fixed by a per-type service; "" on ADS
	watches []*sotwWatch // in push order (compareTypes)
	nonce   uint64
}

// serveSotW runs one state-of-the-world stream. typeURL is the service's
// type for per-type services and "" for ADS.
func (s *Server) serveSotW(stream sotwStream, typeURL string) error {
	first, err := stream.Recv()
	if err != nil {
		return streamEnd(err)
	}
	c, err := s.open(first.GetNode(), peerOf(stream.Context()))
	if err != nil {
		return err
	}
	sc := &sotwConn{conn: c, stream: stream, typeURL: typeURL}

	sc.start(sc.pushAll)
	return c.runGRPC(func() error { return serve(c, stream.Recv, first, sc.handle) })
}

func (sc *sotwConn) handle(req *discoveryv3.DiscoveryRequest) error {
	typeURL, ok := sc.requestType(sc.typeURL, req.GetTypeUrl())
	if !ok || sc.secretsWithheld(typeURL) {
		return nil
	}
	w := sc.watch(typeURL)
	if nonce := req.GetResponseNonce(); nonce != "" {
		if w == nil || nonce != w.nonce {
			// Stale: the client has not seen our latest response yet and will
			// answer it; acting on this request could re-send or mis-attribute.
			return nil
		}
		sc.answered(&w.waiting)
		if d := req.GetErrorDetail(); d != nil {
			sc.nack(typeURL, w.version, d.GetMessage())
		} else {
			sc.ack(typeURL, req.GetVersionInfo())
		}
	} else if w != nil {
		// A request without a nonce on a type already served is a fresh
		// subscription: the client holds nothing for it any more.
		sc.answered(&w.waiting)
		w.started, w.sentTS, w.sent = false, nil, nil
	}
	if w == nil {
		if len(sc.watches) >= maxWatches {
			return status.Errorf(codes.ResourceExhausted, "xds: more than %d resource types on one stream", maxWatches)
		}
		w = &sotwWatch{typeURL: canonicalType(typeURL)}
		i, _ := slices.BinarySearchFunc(sc.watches, typeURL, func(w *sotwWatch, t string) int { return compareTypes(w.typeURL, t) })
		sc.watches = slices.Insert(sc.watches, i, w)
	}
	w.setNames(req.GetResourceNames())
	if sc.gs != nil {
		ts := sc.gs.types[w.typeURL]
		for i, n := range w.names {
			w.names[i] = canonicalName(ts, n)
		}
	}
	return sc.push(w)
}

func (sc *sotwConn) watch(typeURL string) *sotwWatch {
	for _, w := range sc.watches {
		if w.typeURL == typeURL {
			return w
		}
	}
	return nil
}

// setNames applies a request's resource_names. For LDS and CDS an empty list
// means every resource; "*" means every resource for any type.
func (w *sotwWatch) setNames(names []string) {
	w.wildcard = len(names) == 0 && fullState(w.typeURL)
	if cap(w.names) < len(names) {
		w.names = make([]string, 0, len(names)) // exact: no growth slack kept per stream
	}
	w.names = w.names[:0]
	for _, n := range names {
		if n == "*" {
			w.wildcard = true
			continue
		}
		w.names = append(w.names, n)
	}
	slices.Sort(w.names)
	w.names = slices.Compact(w.names)
	if len(w.names) == 0 {
		w.names = nil
	}
}

func (sc *sotwConn) pushAll() error {
	for _, w := range sc.watches {
		if err := sc.push(w); err != nil {
			return err
		}
	}
	return nil
}

// push sends the watch's type if what the client would receive differs from
// what it was last sent. Nothing is sent before the group's first snapshot.
func (sc *sotwConn) push(w *sotwWatch) error {
	if sc.gs.snap == nil {
		return nil
	}
	typeURL := w.typeURL
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
		var sent []held
		if ts != nil {
			sent = make([]held, 0, len(w.names))
			for _, n := range w.names {
				if e := ts.byName[n]; e != nil {
					sent = append(sent, held{n, e.version})
				}
			}
		}
		if w.started && slices.Equal(sent, w.sent) {
			return nil
		}
		// Absent named RDS/EDS/SDS resources may still appear: wait rather
		// than answer with nothing. For LDS/CDS an empty answer tells the
		// client (gRPC proxyless) at once that its listener does not exist.
		if !w.started && len(sent) == 0 && !fullState(typeURL) {
			return nil
		}
		resources = make([]*anypb.Any, len(sent))
		for i, h := range sent {
			resources[i] = ts.byName[h.name].sotw
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
	sc.sent(&w.waiting)
	return sc.stream.Send(resp)
}

// compareTypes orders types by typeRank, then by name.
func compareTypes(a, b string) int {
	return cmp.Or(cmp.Compare(typeRank(a), typeRank(b)), strings.Compare(a, b))
}
