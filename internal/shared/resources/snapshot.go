// Package resources owns the xDS v3 resource set a proxy runs (Snapshot): its
// consistency checks (every resource valid, names unique, references
// resolved), its config_dump JSON form and its content hash. Both the data
// plane and the control plane use it, so it imports nothing from either.
package resources

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Snapshot is a complete set of xDS v3 resources (what a proxy runs). A
// Snapshot is treated as immutable once built: share it, do not edit it.
type Snapshot struct {
	Listeners []*listenerv3.Listener
	// Routes holds RDS configurations referenced by name from listeners; it
	// is empty when every listener carries its routes inline.
	Routes   []*routev3.RouteConfiguration
	Clusters []*clusterv3.Cluster
	// Endpoints holds the load assignments of EDS clusters.
	Endpoints []*endpointv3.ClusterLoadAssignment
	Secrets   []*tlsv3.Secret
}

// Deterministic marshalling matters for Hash and for Any payloads: map fields
// (typed_per_filter_config, Struct) must encode the same way every time.
var deterministic = proto.MarshalOptions{Deterministic: true}

// NewAny packs m into an Any with deterministic encoding, so that equal
// configurations produce equal bytes (and equal Snapshot hashes).
func NewAny(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, deterministic); err != nil {
		return nil, fmt.Errorf("pack %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return a, nil
}

// Hash returns a stable content hash of the snapshot (hex, 128 bits): equal
// resource sets in equal order give equal hashes. It serves as a version.
func (s *Snapshot) Hash() string {
	h := sha256.New()
	write := func(kind string, m proto.Message) {
		b, err := deterministic.Marshal(m)
		if err != nil {
			// A message that cannot marshal still gets a hash that differs
			// from every valid one; Validate reports the real problem.
			b = []byte(err.Error())
		}
		var n [8]byte
		putLen(n[:], len(kind))
		h.Write(n[:])
		h.Write([]byte(kind))
		putLen(n[:], len(b))
		h.Write(n[:])
		h.Write(b)
	}
	for _, r := range s.Listeners {
		write("listener", r)
	}
	for _, r := range s.Routes {
		write("route", r)
	}
	for _, r := range s.Clusters {
		write("cluster", r)
	}
	for _, r := range s.Endpoints {
		write("endpoint", r)
	}
	for _, r := range s.Secrets {
		write("secret", r)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func putLen(b []byte, n int) {
	for i := range b {
		b[i] = byte(n >> (8 * i))
	}
}

// MarshalJSON renders the snapshot like Envoy's /config_dump: an
// envoy.admin.v3.ConfigDump with one static_* section per resource type.
// Fields the API marks sensitive (private keys, passwords) show as
// "[redacted]", as in Envoy.
// The output is indented JSON whose bytes depend only on the content
// (protojson's deliberately unstable whitespace is normalised away).
func (s *Snapshot) MarshalJSON() ([]byte, error) {
	dump, err := s.configDump()
	if err != nil {
		return nil, err
	}
	raw, err := protojson.MarshalOptions{}.Marshal(dump)
	if err != nil {
		return nil, fmt.Errorf("config dump: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return nil, fmt.Errorf("config dump: indent: %w", err)
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

func (s *Snapshot) configDump() (*adminv3.ConfigDump, error) {
	ls := &adminv3.ListenersConfigDump{}
	for _, r := range s.Listeners {
		a, err := dumpAny(r)
		if err != nil {
			return nil, err
		}
		ls.StaticListeners = append(ls.StaticListeners, &adminv3.ListenersConfigDump_StaticListener{Listener: a})
	}
	rs := &adminv3.RoutesConfigDump{}
	for _, r := range s.Routes {
		a, err := dumpAny(r)
		if err != nil {
			return nil, err
		}
		rs.StaticRouteConfigs = append(rs.StaticRouteConfigs, &adminv3.RoutesConfigDump_StaticRouteConfig{RouteConfig: a})
	}
	cs := &adminv3.ClustersConfigDump{}
	for _, r := range s.Clusters {
		a, err := dumpAny(r)
		if err != nil {
			return nil, err
		}
		cs.StaticClusters = append(cs.StaticClusters, &adminv3.ClustersConfigDump_StaticCluster{Cluster: a})
	}
	es := &adminv3.EndpointsConfigDump{}
	for _, r := range s.Endpoints {
		a, err := dumpAny(r)
		if err != nil {
			return nil, err
		}
		es.StaticEndpointConfigs = append(es.StaticEndpointConfigs, &adminv3.EndpointsConfigDump_StaticEndpointConfig{EndpointConfig: a})
	}
	ss := &adminv3.SecretsConfigDump{}
	for _, r := range s.Secrets {
		a, err := dumpAny(r)
		if err != nil {
			return nil, err
		}
		ss.StaticSecrets = append(ss.StaticSecrets, &adminv3.SecretsConfigDump_StaticSecret{Name: r.GetName(), Secret: a})
	}
	dump := &adminv3.ConfigDump{}
	for _, m := range []proto.Message{ls, rs, cs, es, ss} {
		a, err := NewAny(m)
		if err != nil {
			return nil, err
		}
		dump.Configs = append(dump.Configs, a)
	}
	return dump, nil
}

// dumpAny packs a redacted copy of m: /config_dump must never show keys.
func dumpAny(m proto.Message) (*anypb.Any, error) {
	c := proto.Clone(m)
	if _, err := redact(c.ProtoReflect()); err != nil {
		return nil, fmt.Errorf("redact %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return NewAny(c)
}
