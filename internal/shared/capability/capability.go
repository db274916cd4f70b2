// Package capability owns the description of what an xDS client can run
// (its kind, build, HTTP/network filters, extension runtimes, ABI versions,
// features and limits) and its encoding in the xDS Node. The data plane
// writes it into its Node with Set.Apply; the control plane reads any Node
// (OmniRelay, Envoy, gRPC proxyless, anything else) with FromNode and sends
// each client only what its Set says it can run.
//
// Envoy and gRPC do not send OmniRelay's metadata, so FromNode gives them a
// default Set by kind: what a stock build of that client is known to
// support. Envoy does list its compiled-in extensions in Node.extensions;
// when present they replace the default filter list.
package capability

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Kind is the family of xDS client a Node belongs to.
type Kind string

// Client kinds FromNode recognises.
const (
	KindOmniRelay Kind = "omnirelay"
	KindEnvoy     Kind = "envoy"
	KindGRPC      Kind = "grpc"
	KindUnknown   Kind = "unknown"
)

// MetadataKey is the Node.metadata field holding an OmniRelay Set.
const MetadataKey = "omnirelay.capabilities"

// UserAgentName is the Node.user_agent_name OmniRelay sends.
const UserAgentName = "omnirelay"

// FeatureNoOverprovisioning is the client feature gRPC sends: it ignores
// ClusterLoadAssignment overprovisioning. Its presence marks a gRPC client
// even when user_agent_name does not.
const FeatureNoOverprovisioning = "envoy.lb.does_not_support_overprovisioning"

// Set is what one xDS client can run. The zero value can run nothing.
// Slices are treated as sets; Apply and FromNode keep them sorted and
// without duplicates.
type Set struct {
	Kind  Kind
	Build string // version of the client build, e.g. "1.40.0" or "dev"
	// Filters are the HTTP and network filter names the client can run,
	// as Envoy spells them, e.g. "envoy.filters.http.cors".
	Filters  []string
	Runtimes []string // extension runtimes: "wasm", "dsl", "native"
	ABIs     []string // extension ABI versions, e.g. "proxy-wasm/0.2.1"
	Features []string // xDS client features (Node.client_features)
	Limits   map[string]uint64
}

// Has reports whether the client can run the named filter.
func (s Set) Has(filter string) bool {
	return slices.Contains(s.Filters, filter)
}

// Fingerprint is a stable digest of the Set: equal Sets (as sets, whatever
// the order of their slices) have equal fingerprints. The control plane
// uses it to share one filtered snapshot between clients of the same build.
func (s Set) Fingerprint() string {
	h := sha256.New()
	write := func(tag string, vals []string) {
		vals = normalize(vals)
		fmt.Fprintf(h, "%s %d\n", tag, len(vals))
		for _, v := range vals {
			// Length-prefixed so that no value can forge a separator.
			fmt.Fprintf(h, "%d:%s\n", len(v), v)
		}
	}
	write("kind", []string{string(s.Kind)})
	write("build", []string{s.Build})
	write("filters", s.Filters)
	write("runtimes", s.Runtimes)
	write("abis", s.ABIs)
	write("features", s.Features)
	limits := make([]string, 0, len(s.Limits))
	for k, v := range s.Limits {
		limits = append(limits, k+"="+strconv.FormatUint(v, 10))
	}
	write("limits", limits)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Apply writes s into n as an OmniRelay node: user_agent_name "omnirelay",
// user_agent_build_version (semver parsed from Build when it is one, Build
// itself in its metadata), one extension per filter, client_features, and
// the whole Set under metadata["omnirelay.capabilities"]. Other metadata
// keys are kept.
func (s Set) Apply(n *corev3.Node) {
	n.UserAgentName = UserAgentName
	n.UserAgentVersionType = &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev3.BuildVersion{
		Version:  semver(s.Build),
		Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{"build": structpb.NewStringValue(s.Build)}},
	}}
	filters := normalize(s.Filters)
	n.Extensions = make([]*corev3.Extension, 0, len(filters))
	for _, f := range filters {
		n.Extensions = append(n.Extensions, &corev3.Extension{Name: f, Category: category(f)})
	}
	n.ClientFeatures = normalize(s.Features)
	if n.Metadata == nil {
		n.Metadata = &structpb.Struct{}
	}
	if n.Metadata.Fields == nil {
		n.Metadata.Fields = map[string]*structpb.Value{}
	}
	n.Metadata.Fields[MetadataKey] = structpb.NewStructValue(s.toStruct())
}

func (s Set) toStruct() *structpb.Struct {
	list := func(vals []string) *structpb.Value {
		vals = normalize(vals)
		out := make([]*structpb.Value, len(vals))
		for i, v := range vals {
			out[i] = structpb.NewStringValue(v)
		}
		return structpb.NewListValue(&structpb.ListValue{Values: out})
	}
	limits := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(s.Limits))}
	for k, v := range s.Limits {
		limits.Fields[k] = structpb.NewNumberValue(float64(v))
	}
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		"build":    structpb.NewStringValue(s.Build),
		"filters":  list(s.Filters),
		"runtimes": list(s.Runtimes),
		"abis":     list(s.ABIs),
		"features": list(s.Features),
		"limits":   structpb.NewStructValue(limits),
	}}
}

// FromNode returns what the client behind n can run. It never fails: a
// Node is advisory input from the network, so fields of the wrong type are
// ignored and an unrecognised client gets the conservative KindUnknown set.
func FromNode(n *corev3.Node) Set {
	switch kind := kindOf(n); kind {
	case KindOmniRelay:
		return omniRelaySet(n)
	case KindEnvoy:
		return envoySet(n)
	case KindGRPC:
		return grpcSet(n)
	default:
		return Set{
			Kind:     KindUnknown,
			Build:    buildOf(n),
			Filters:  unknownFilters(),
			Features: normalize(n.GetClientFeatures()),
		}
	}
}

// Default returns the Set FromNode gives a client of kind k that says
// nothing more about itself: the known filters of a stock build.
func Default(k Kind) Set {
	switch k {
	case KindOmniRelay:
		return Set{Kind: k}
	case KindEnvoy:
		return Set{Kind: k, Filters: envoyFilters(), Runtimes: []string{"native", "wasm"}}
	case KindGRPC:
		return Set{Kind: k, Filters: grpcFilters()}
	default:
		return Set{Kind: KindUnknown, Filters: unknownFilters()}
	}
}

func kindOf(n *corev3.Node) Kind {
	ua := n.GetUserAgentName()
	switch {
	case ua == UserAgentName:
		return KindOmniRelay
	case ua == "envoy":
		return KindEnvoy
	case strings.HasPrefix(ua, "gRPC"), strings.HasPrefix(ua, "grpc"):
		return KindGRPC
	case slices.Contains(n.GetClientFeatures(), FeatureNoOverprovisioning):
		return KindGRPC
	}
	return KindUnknown
}

func omniRelaySet(n *corev3.Node) Set {
	s := Set{Kind: KindOmniRelay, Build: buildOf(n)}
	md := n.GetMetadata().GetFields()[MetadataKey].GetStructValue()
	if md == nil {
		// An OmniRelay build without the metadata still lists its filters
		// as extensions.
		s.Filters = extensionFilters(n)
		s.Features = normalize(n.GetClientFeatures())
		return s
	}
	f := md.GetFields()
	if b, ok := f["build"].GetKind().(*structpb.Value_StringValue); ok {
		s.Build = b.StringValue
	}
	s.Filters = stringList(f["filters"])
	s.Runtimes = stringList(f["runtimes"])
	s.ABIs = stringList(f["abis"])
	s.Features = stringList(f["features"])
	if lim := f["limits"].GetStructValue(); lim != nil {
		for k, v := range lim.GetFields() {
			num, ok := v.GetKind().(*structpb.Value_NumberValue)
			// 2^64 itself is a float64 but not a uint64.
			if !ok || num.NumberValue < 0 || num.NumberValue >= 1<<64 || num.NumberValue != float64(uint64(num.NumberValue)) {
				continue
			}
			if s.Limits == nil {
				s.Limits = map[string]uint64{}
			}
			s.Limits[k] = uint64(num.NumberValue)
		}
	}
	return s
}

func envoySet(n *corev3.Node) Set {
	s := Set{
		Kind:     KindEnvoy,
		Build:    buildOf(n),
		Filters:  extensionFilters(n),
		Runtimes: []string{"native", "wasm"},
		Features: normalize(n.GetClientFeatures()),
	}
	if len(s.Filters) == 0 {
		s.Filters = envoyFilters()
	}
	return s
}

func grpcSet(n *corev3.Node) Set {
	return Set{
		Kind:     KindGRPC,
		Build:    buildOf(n),
		Filters:  grpcFilters(),
		Features: normalize(n.GetClientFeatures()),
	}
}

// buildOf returns the client's version: the "build" metadata of
// user_agent_build_version, else its semver, else user_agent_version.
func buildOf(n *corev3.Node) string {
	switch v := n.GetUserAgentVersionType().(type) {
	case *corev3.Node_UserAgentVersion:
		return v.UserAgentVersion
	case *corev3.Node_UserAgentBuildVersion:
		// OmniRelay always writes "build", even empty: then the semver
		// (0.0.0 for a non-semver build) says nothing.
		if b, ok := v.UserAgentBuildVersion.GetMetadata().GetFields()["build"].GetKind().(*structpb.Value_StringValue); ok {
			return b.StringValue
		}
		if sv := v.UserAgentBuildVersion.GetVersion(); sv != nil {
			return fmt.Sprintf("%d.%d.%d", sv.GetMajorNumber(), sv.GetMinorNumber(), sv.GetPatch())
		}
	}
	return ""
}

// extensionFilters lists the enabled HTTP and network filters of
// Node.extensions.
func extensionFilters(n *corev3.Node) []string {
	var out []string
	for _, e := range n.GetExtensions() {
		if e.GetDisabled() {
			continue
		}
		switch e.GetCategory() {
		case "envoy.filters.http", "envoy.filters.network":
			out = append(out, e.GetName())
		}
	}
	return normalize(out)
}

func stringList(v *structpb.Value) []string {
	var out []string
	for _, e := range v.GetListValue().GetValues() {
		if s, ok := e.GetKind().(*structpb.Value_StringValue); ok {
			out = append(out, s.StringValue)
		}
	}
	return normalize(out)
}

// normalize returns vals sorted without duplicates or empty strings, as a
// new slice (nil when empty) so callers never share backing arrays.
func normalize(vals []string) []string {
	var out []string
	for _, v := range vals {
		if v != "" {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// category is the extension category of a filter name: everything before
// its last dot ("envoy.filters.http.cors" -> "envoy.filters.http").
func category(name string) string {
	if i := strings.LastIndexByte(name, '.'); i > 0 {
		return name[:i]
	}
	return name
}

// semver parses "1.2.3" (with an optional leading "v" and anything after a
// '-' or '+' ignored); anything else is 0.0.0 and the build string alone,
// kept in the metadata, says what it is.
func semver(build string) *typev3.SemanticVersion {
	core, _, _ := strings.Cut(strings.TrimPrefix(build, "v"), "-")
	core, _, _ = strings.Cut(core, "+")
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return &typev3.SemanticVersion{}
	}
	var nums [3]uint32
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return &typev3.SemanticVersion{}
		}
		nums[i] = uint32(v)
	}
	return &typev3.SemanticVersion{MajorNumber: nums[0], MinorNumber: nums[1], Patch: nums[2]}
}
