package xdsclient

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/shared/resources"
)

// Type URLs of the resources the client subscribes to, in the order Envoy
// asks for them (CDS before EDS, LDS before RDS) so that a cluster or listener
// update names what it needs before the dependants arrive.
const (
	TypeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"
	TypeRoute    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	TypeCluster  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	TypeEndpoint = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	TypeSecret   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

	// resourceWrapperType is the Any type of a discovery Resource wrapper:
	// SotW responses carry signed resources this way, since only the
	// wrapper has room for the signature metadata.
	resourceWrapperType = "type.googleapis.com/envoy.service.discovery.v3.Resource"
)

// typeOrder is the order of subscription and of version strings.
var typeOrder = []string{TypeCluster, TypeEndpoint, TypeListener, TypeRoute, TypeSecret}

// wildcard reports whether a type is subscribed as a whole (LDS, CDS) rather
// than by the names other resources reference.
func wildcard(typeURL string) bool { return typeURL == TypeListener || typeURL == TypeCluster }

func shortType(typeURL string) string {
	switch typeURL {
	case TypeListener:
		return "lds"
	case TypeRoute:
		return "rds"
	case TypeCluster:
		return "cds"
	case TypeEndpoint:
		return "eds"
	case TypeSecret:
		return "sds"
	}
	return typeURL
}

// entry is one received resource: the exact Any the server sent (its bytes
// are what a signature covers and what last-known-good stores), its
// signature metadata, and the decoded message.
type entry struct {
	name     string
	version  string
	body     *anypb.Any
	metadata *corev3.Metadata
	msg      proto.Message
	// deps are the names a listener or cluster references, found once at
	// decode time so that assembling a snapshot does not walk protos again.
	deps deps
}

// deps are one resource's references by type.
type deps struct{ routes, endpoints, secrets []string }

func (e *entry) wire() *discoveryv3.Resource {
	return &discoveryv3.Resource{Name: e.name, Version: e.version, Resource: e.body, Metadata: e.metadata}
}

// update is a response not yet answered (neither ACKed nor NACKed).
type update struct {
	version string
	nonce   string
	// key identifies the content (type, version, resource bytes) so that a
	// server re-sending a rejected update can be told apart from a new one.
	key string
}

// set is one version of a type's resources.
type set struct {
	resources map[string]*entry
	version   string // the response's version_info (SotW) or system version (delta)
	seen      bool   // a response of this type has been taken
}

// typeState is what the client holds for one resource type: what runs
// (accepted) and the server's latest view (received). They differ while an
// update warms, and after a rejection until the server sends another
// version: the received content is kept, because a server that does not
// re-send a NACKed version (MeshKit) would otherwise never send it again,
// and it may have been rejected only for another type's fault.
type typeState struct {
	url      string
	accepted set
	received set
	// dirty is true while received differs from accepted.
	dirty bool
	// unanswered is the last response of this type on this stream that
	// was neither ACKed nor NACKed (warming).
	unanswered *update
	// names is the current subscription of a non-wildcard type, sorted.
	names []string
	// nonce is the last response nonce on the current stream.
	nonce string

	// rejectedKey/Detail are the last update of this type the client
	// rejected, so that a server re-sending it is answered in kind.
	rejectedKey    string
	rejectedDetail string
	rejectedCount  int
}

func newTypeState(url string) *typeState {
	return &typeState{url: url, accepted: set{resources: map[string]*entry{}}, received: set{resources: map[string]*entry{}}}
}

// commit makes the received set the running one.
func (t *typeState) commit() { t.accepted, t.dirty = t.received, false }

// take makes s the server's latest view.
func (t *typeState) take(s set) { t.received, t.dirty = s, true }

// forget drops what only the server's latest view held (a new stream
// re-sends it), and the memory of rejections: on a new stream a re-sent
// update is tried again, since what it was rejected with may be fixed.
func (t *typeState) forget() {
	t.received, t.dirty, t.unanswered, t.nonce = t.accepted, false, nil, ""
	t.rejectedKey, t.rejectedDetail, t.rejectedCount = "", "", 0
}

// decodeResource unwraps and checks one resource of typeURL. name and
// metadata come from the wrapper when there is one; verify checks the
// signature (nil: no trust root configured).
func decodeResource(typeURL, name, version string, body *anypb.Any, md *corev3.Metadata, verify verifyFunc) (*entry, error) {
	if body == nil {
		return nil, fmt.Errorf("resource %q: no body", name)
	}
	if body.GetTypeUrl() != typeURL {
		return nil, fmt.Errorf("resource %q: type %q in a %s response", name, body.GetTypeUrl(), shortType(typeURL))
	}
	msg, err := newMessage(typeURL)
	if err != nil {
		return nil, err
	}
	if err := proto.Unmarshal(body.GetValue(), msg); err != nil {
		return nil, fmt.Errorf("resource %q: decode %s: %w", name, shortType(typeURL), err)
	}
	inner := resourceName(msg)
	if name == "" {
		name = inner
	}
	if inner != name {
		return nil, fmt.Errorf("resource %q: body is named %q", name, inner)
	}
	if name == "" {
		return nil, fmt.Errorf("%s resource without a name", shortType(typeURL))
	}
	if verify != nil {
		if err := verify(name, body, md); err != nil {
			// The verifier's message names the resource and the reason.
			return nil, fmt.Errorf("rejected signature: %w", err)
		}
	}
	return &entry{name: name, version: version, body: body, metadata: md, msg: msg, deps: findDeps(msg)}, nil
}

// unwrapAny turns one SotW resource into (name, version, body, metadata):
// a discovery Resource wrapper is opened, a bare resource is its own body.
func unwrapAny(a *anypb.Any) (string, string, *anypb.Any, *corev3.Metadata, error) {
	if a.GetTypeUrl() != resourceWrapperType {
		return "", "", a, nil, nil
	}
	var r discoveryv3.Resource
	if err := proto.Unmarshal(a.GetValue(), &r); err != nil {
		return "", "", nil, nil, fmt.Errorf("decode resource wrapper: %w", err)
	}
	return r.GetName(), r.GetVersion(), r.GetResource(), r.GetMetadata(), nil
}

func newMessage(typeURL string) (proto.Message, error) {
	switch typeURL {
	case TypeListener:
		return &listenerv3.Listener{}, nil
	case TypeRoute:
		return &routev3.RouteConfiguration{}, nil
	case TypeCluster:
		return &clusterv3.Cluster{}, nil
	case TypeEndpoint:
		return &endpointv3.ClusterLoadAssignment{}, nil
	case TypeSecret:
		return &tlsv3.Secret{}, nil
	}
	return nil, fmt.Errorf("unsupported resource type %q", typeURL)
}

func resourceName(m proto.Message) string {
	switch r := m.(type) {
	case *listenerv3.Listener:
		return r.GetName()
	case *routev3.RouteConfiguration:
		return r.GetName()
	case *clusterv3.Cluster:
		return r.GetName()
	case *endpointv3.ClusterLoadAssignment:
		return r.GetClusterName()
	case *tlsv3.Secret:
		return r.GetName()
	}
	return ""
}

// contentKey identifies an update's content for the NACK-loop guard.
func contentKey(typeURL, version string, rs map[string]*entry) string {
	h := sha256.New()
	h.Write([]byte(typeURL + "\x00" + version + "\x00"))
	for _, n := range slices.Sorted(maps.Keys(rs)) {
		h.Write([]byte(n + "\x00"))
		h.Write(rs[n].body.GetValue())
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// refs are the names the listeners and clusters in view depend on.
type refs struct {
	routes, endpoints, secrets map[string]bool
}

func (r refs) names(typeURL string) []string {
	var m map[string]bool
	switch typeURL {
	case TypeRoute:
		m = r.routes
	case TypeEndpoint:
		m = r.endpoints
	case TypeSecret:
		m = r.secrets
	}
	return slices.Sorted(maps.Keys(m))
}

// collectRefs unions the references of listeners and clusters.
func collectRefs(listeners, clusters map[string]*entry) refs {
	r := refs{routes: map[string]bool{}, endpoints: map[string]bool{}, secrets: map[string]bool{}}
	for _, m := range []map[string]*entry{listeners, clusters} {
		for _, e := range m {
			for _, n := range e.deps.routes {
				r.routes[n] = true
			}
			for _, n := range e.deps.endpoints {
				r.endpoints[n] = true
			}
			for _, n := range e.deps.secrets {
				r.secrets[n] = true
			}
		}
	}
	return r
}

// findDeps returns what a listener or cluster references: RDS names (HCM
// rds.route_config_name), the EDS name (eds_cluster_config.service_name or
// the cluster name) and SDS secret names (every SdsSecretConfig).
func findDeps(m proto.Message) deps {
	var d deps
	switch v := m.(type) {
	case *listenerv3.Listener:
	case *clusterv3.Cluster:
		if v.GetType() == clusterv3.Cluster_EDS {
			n := v.GetEdsClusterConfig().GetServiceName()
			if n == "" {
				n = v.GetName()
			}
			d.endpoints = []string{n}
		}
	default:
		return d
	}
	walk(m.ProtoReflect(), func(m proto.Message) {
		switch v := m.(type) {
		case *hcmv3.HttpConnectionManager:
			if n := v.GetRds().GetRouteConfigName(); n != "" {
				d.routes = append(d.routes, n)
			}
		case *tlsv3.SdsSecretConfig:
			// A secret with its own api_config_source (the local identity
			// agent's "sds-grpc") is not fetched over ADS.
			if v.GetSdsConfig().GetApiConfigSource() == nil {
				d.secrets = append(d.secrets, v.GetName())
			}
		}
	})
	return d
}

// walk calls fn for every message below m (m included), opening Any fields
// whose type is linked into the binary (HCM and TLS contexts are).
func walk(m protoreflect.Message, fn func(proto.Message)) {
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err == nil {
			walk(inner.ProtoReflect(), fn)
		}
		return
	}
	fn(m.Interface())
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return true
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				walk(l.Get(i).Message(), fn)
			}
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					walk(mv.Message(), fn)
					return true
				})
			}
		default:
			walk(v.Message(), fn)
		}
		return true
	})
}

// assembly is a complete snapshot with the exact resources it was built
// from (for last-known-good).
type assembly struct {
	snap    *resources.Snapshot
	wire    []*discoveryv3.Resource
	version string
}

// pickReceived chooses the server's latest view of every type for assemble.
func pickReceived(t *typeState) set { return t.received }

// errIncomplete names what a snapshot still waits for (warming): refs are
// the named resources among them (not the wildcard types).
type errIncomplete struct {
	missing []string
	refs    []missingRef
}

// missingRef is a referenced resource that has not arrived.
type missingRef struct{ typeURL, name string }

func (r missingRef) key() string { return r.typeURL + " " + r.name }

// stand-ins for referenced resources that did not arrive in time
// (Options.InitialFetchTimeout), as Envoy finishes warming after its
// initial_fetch_timeout: a cluster without endpoints answers 503, a route
// configuration without virtual hosts 404. A secret has no stand-in: the
// secret store keeps the context warming (handshakes refused) until it
// comes.
func standIn(typeURL, name string) proto.Message {
	switch typeURL {
	case TypeEndpoint:
		return &endpointv3.ClusterLoadAssignment{ClusterName: name}
	case TypeRoute:
		return &routev3.RouteConfiguration{Name: name}
	}
	return nil
}

func (e errIncomplete) Error() string { return "waiting for " + strings.Join(e.missing, ", ") }

// assemble builds a snapshot from one set of each type (pick chooses the
// received or the accepted one): every listener and cluster, and the
// routes, endpoints and secrets they reference. It fails with errIncomplete
// while a referenced resource has not arrived, unless gaveUp says to stop
// waiting for it (nil: wait for all): it then gets its stand-in, in the
// snapshot only (never in the wire list, so never in last-known-good).
func assemble(types map[string]*typeState, pick func(*typeState) set, gaveUp func(typeURL, name string) bool) (*assembly, error) {
	sets := map[string]set{}
	for _, u := range typeOrder {
		sets[u] = pick(types[u])
	}
	var missing []string
	for _, u := range []string{TypeListener, TypeCluster} {
		if !sets[u].seen {
			missing = append(missing, shortType(u))
		}
	}
	if len(missing) > 0 {
		return nil, errIncomplete{missing: missing}
	}
	r := collectRefs(sets[TypeListener].resources, sets[TypeCluster].resources)
	picked := map[string][]*entry{}
	var refs []missingRef
	var standIns []proto.Message
	for _, u := range typeOrder {
		view := sets[u].resources
		if wildcard(u) {
			for _, n := range slices.Sorted(maps.Keys(view)) {
				picked[u] = append(picked[u], view[n])
			}
			continue
		}
		for _, n := range r.names(u) {
			e := view[n]
			if e == nil {
				if gaveUp != nil && gaveUp(u, n) {
					if m := standIn(u, n); m != nil {
						standIns = append(standIns, m)
					}
					continue
				}
				missing = append(missing, shortType(u)+" "+strconv.Quote(n))
				refs = append(refs, missingRef{u, n})
				continue
			}
			picked[u] = append(picked[u], e)
		}
	}
	if len(missing) > 0 {
		return nil, errIncomplete{missing: missing, refs: refs}
	}
	a := &assembly{snap: &resources.Snapshot{}}
	for _, m := range standIns {
		switch m := m.(type) {
		case *routev3.RouteConfiguration:
			a.snap.Routes = append(a.snap.Routes, m)
		case *endpointv3.ClusterLoadAssignment:
			a.snap.Endpoints = append(a.snap.Endpoints, m)
		}
	}
	var versions []string
	for _, u := range typeOrder {
		for _, e := range picked[u] {
			a.wire = append(a.wire, e.wire())
			switch m := e.msg.(type) {
			case *listenerv3.Listener:
				a.snap.Listeners = append(a.snap.Listeners, m)
			case *routev3.RouteConfiguration:
				a.snap.Routes = append(a.snap.Routes, m)
			case *clusterv3.Cluster:
				a.snap.Clusters = append(a.snap.Clusters, m)
			case *endpointv3.ClusterLoadAssignment:
				a.snap.Endpoints = append(a.snap.Endpoints, m)
			case *tlsv3.Secret:
				a.snap.Secrets = append(a.snap.Secrets, m)
			}
		}
		if v := sets[u].version; v != "" {
			versions = append(versions, shortType(u)+"="+v)
		}
	}
	a.version = strings.Join(versions, ",")
	return a, nil
}

// snapshotFromWire decodes a stored resource list (last-known-good) the same
// way a response is decoded, signatures included.
func snapshotFromWire(rs []*discoveryv3.Resource, verify verifyFunc) (*resources.Snapshot, error) {
	types := map[string]*typeState{}
	for _, u := range typeOrder {
		types[u] = newTypeState(u)
		types[u].received.seen = true
	}
	for i, r := range rs {
		u := r.GetResource().GetTypeUrl()
		t := types[u]
		if t == nil {
			return nil, fmt.Errorf("resource %d (%q): unsupported type %q", i, r.GetName(), u)
		}
		e, err := decodeResource(u, r.GetName(), r.GetVersion(), r.GetResource(), r.GetMetadata(), verify)
		if err != nil {
			return nil, err
		}
		if t.received.resources[e.name] != nil {
			return nil, fmt.Errorf("%s resource %q appears twice", shortType(u), e.name)
		}
		t.received.resources[e.name] = e
	}
	// A snapshot applied with stand-ins was stored without them.
	a, err := assemble(types, pickReceived, func(string, string) bool { return true })
	if err != nil {
		var inc errIncomplete
		if errors.As(err, &inc) {
			return nil, fmt.Errorf("incomplete: %w", err)
		}
		return nil, err
	}
	return a.snap, nil
}
