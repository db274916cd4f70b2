package xdsclient

import (
	"maps"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
)

// sotwTransport speaks state-of-the-world ADS: every request of a type
// carries the type's full subscription, its last accepted version and the
// last nonce.
type sotwTransport struct {
	s        discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node     *corev3.Node
	nodeSent bool
}

func (t *sotwTransport) send(r *discoveryv3.DiscoveryRequest) error {
	if !t.nodeSent {
		r.Node, t.nodeSent = t.node, true
	}
	return t.s.Send(r)
}

func (t *sotwTransport) subscribe(ts *typeState, _ []string, _ bool) error {
	return t.send(&discoveryv3.DiscoveryRequest{TypeUrl: ts.url, VersionInfo: ts.accepted.version,
		ResourceNames: ts.names, ResponseNonce: ts.nonce})
}

func (t *sotwTransport) ack(ts *typeState, u *update) error {
	return t.send(&discoveryv3.DiscoveryRequest{TypeUrl: ts.url, VersionInfo: u.version,
		ResourceNames: ts.names, ResponseNonce: u.nonce})
}

func (t *sotwTransport) nack(ts *typeState, nonce, detail string) error {
	return t.send(&discoveryv3.DiscoveryRequest{TypeUrl: ts.url, VersionInfo: ts.accepted.version,
		ResourceNames: ts.names, ResponseNonce: nonce,
		ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: detail}})
}

func (t *sotwTransport) recv() (*response, error) {
	m, err := t.s.Recv()
	if err != nil {
		return nil, err
	}
	r := &response{typeURL: m.GetTypeUrl(), version: m.GetVersionInfo(), nonce: m.GetNonce(), full: true}
	for _, a := range m.GetResources() {
		name, version, body, md, err := unwrapAny(a)
		if version == "" {
			version = m.GetVersionInfo()
		}
		r.resources = append(r.resources, rawResource{name: name, version: version, body: body, md: md, err: err})
	}
	return r, nil
}

// deltaTransport speaks incremental ADS: requests carry subscription
// changes; responses carry changed and removed resources.
type deltaTransport struct {
	s        discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	node     *corev3.Node
	nodeSent bool
}

func (t *deltaTransport) send(r *discoveryv3.DeltaDiscoveryRequest) error {
	if !t.nodeSent {
		r.Node, t.nodeSent = t.node, true
	}
	return t.s.Send(r)
}

// subscribe on a new stream names what the client holds of the type in
// initial_resource_versions, so that the server sends only what changed.
func (t *deltaTransport) subscribe(ts *typeState, old []string, first bool) error {
	r := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: ts.url}
	if first {
		r.ResourceNamesSubscribe = ts.names
		held := map[string]string{}
		for n, e := range ts.accepted.resources {
			if ts.names == nil || slices.Contains(ts.names, n) {
				held[n] = e.version
			}
		}
		if len(held) > 0 {
			r.InitialResourceVersions = held
		}
		return t.send(r)
	}
	for _, n := range ts.names {
		if !slices.Contains(old, n) {
			r.ResourceNamesSubscribe = append(r.ResourceNamesSubscribe, n)
		}
	}
	for _, n := range old {
		if !slices.Contains(ts.names, n) {
			r.ResourceNamesUnsubscribe = append(r.ResourceNamesUnsubscribe, n)
		}
	}
	return t.send(r)
}

func (t *deltaTransport) ack(ts *typeState, u *update) error {
	return t.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: ts.url, ResponseNonce: u.nonce})
}

func (t *deltaTransport) nack(ts *typeState, nonce, detail string) error {
	return t.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: ts.url, ResponseNonce: nonce,
		ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: detail}})
}

func (t *deltaTransport) recv() (*response, error) {
	m, err := t.s.Recv()
	if err != nil {
		return nil, err
	}
	r := &response{typeURL: m.GetTypeUrl(), version: m.GetSystemVersionInfo(), nonce: m.GetNonce(), removed: m.GetRemovedResources()}
	if r.version == "" {
		// Delta servers need not send a system version; the versions of
		// the resources themselves identify the update.
		vs := map[string]string{}
		for _, x := range m.GetResources() {
			vs[x.GetName()] = x.GetVersion()
		}
		r.version = contentVersion(vs)
	}
	for _, x := range m.GetResources() {
		r.resources = append(r.resources, rawResource{name: x.GetName(), version: x.GetVersion(), body: x.GetResource(), md: x.GetMetadata()})
	}
	return r, nil
}

// contentVersion is a short stable name for a set of resource versions.
func contentVersion(vs map[string]string) string {
	if len(vs) == 0 {
		return ""
	}
	h := uint64(14695981039346656037)
	for _, n := range slices.Sorted(maps.Keys(vs)) {
		for _, b := range []byte(n + "=" + vs[n] + ";") {
			h ^= uint64(b)
			h *= 1099511628211
		}
	}
	const digits = "0123456789abcdef"
	out := make([]byte, 16)
	for i := range out {
		out[i] = digits[(h>>(60-4*i))&0xf]
	}
	return string(out)
}
