package capability

import (
	"reflect"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

func sampleSet() Set {
	return Set{
		Kind:     KindOmniRelay,
		Build:    "1.4.2-rc1",
		Filters:  []string{"envoy.filters.http.router", "envoy.filters.http.cors", "envoy.filters.network.http_connection_manager", "envoy.filters.http.cors"},
		Runtimes: []string{"wasm", "dsl", "native"},
		ABIs:     []string{"proxy-wasm/0.2.1"},
		Features: []string{"omnirelay.signed-resources", "envoy.config.require-any-fields-contain-struct"},
		Limits:   map[string]uint64{"max_listeners": 1024, "max_wasm_pages": 4096},
	}
}

func TestApplyRoundTrip(t *testing.T) {
	s := sampleSet()
	n := &corev3.Node{Id: "edge-1", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{"zone": structpb.NewStringValue("a")}}}
	s.Apply(n)

	if n.GetUserAgentName() != "omnirelay" {
		t.Errorf("user_agent_name = %q", n.GetUserAgentName())
	}
	bv := n.GetUserAgentBuildVersion()
	if v := bv.GetVersion(); v.GetMajorNumber() != 1 || v.GetMinorNumber() != 4 || v.GetPatch() != 2 {
		t.Errorf("semver = %v, want 1.4.2", v)
	}
	if got := n.GetMetadata().GetFields()["zone"].GetStringValue(); got != "a" {
		t.Errorf("Apply dropped other metadata: zone = %q", got)
	}
	if len(n.GetExtensions()) != 3 {
		t.Errorf("extensions = %v, want 3 (deduplicated)", n.GetExtensions())
	}
	for _, e := range n.GetExtensions() {
		if e.GetCategory() != "envoy.filters.http" && e.GetCategory() != "envoy.filters.network" {
			t.Errorf("extension %q category %q", e.GetName(), e.GetCategory())
		}
	}
	if !slices.IsSorted(n.GetClientFeatures()) || len(n.GetClientFeatures()) != 2 {
		t.Errorf("client_features = %v", n.GetClientFeatures())
	}

	// Through the wire, as the control plane sees it.
	b, err := proto.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	var wire corev3.Node
	if err := proto.Unmarshal(b, &wire); err != nil {
		t.Fatal(err)
	}
	got := FromNode(&wire)
	want := Set{
		Kind:     KindOmniRelay,
		Build:    "1.4.2-rc1",
		Filters:  []string{"envoy.filters.http.cors", "envoy.filters.http.router", "envoy.filters.network.http_connection_manager"},
		Runtimes: []string{"dsl", "native", "wasm"},
		ABIs:     []string{"proxy-wasm/0.2.1"},
		Features: []string{"envoy.config.require-any-fields-contain-struct", "omnirelay.signed-resources"},
		Limits:   map[string]uint64{"max_listeners": 1024, "max_wasm_pages": 4096},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("FromNode(Apply(s)) =\n%+v\nwant\n%+v", got, want)
	}
	if got.Fingerprint() != s.Fingerprint() {
		t.Errorf("fingerprint changed across the round trip")
	}
}

func TestFromNode(t *testing.T) {
	tests := []struct {
		name     string
		node     *corev3.Node
		kind     Kind
		build    string
		has      []string
		lacks    []string
		features []string
	}{
		{
			name:  "nil node",
			node:  nil,
			kind:  KindUnknown,
			has:   []string{"envoy.filters.http.router"},
			lacks: []string{"envoy.filters.http.cors"},
		},
		{
			name: "envoy without extensions gets the default set",
			node: &corev3.Node{UserAgentName: "envoy", UserAgentVersionType: &corev3.Node_UserAgentBuildVersion{
				UserAgentBuildVersion: &corev3.BuildVersion{Version: semver("1.40.0")}}},
			kind:  KindEnvoy,
			build: "1.40.0",
			has:   []string{"envoy.filters.http.cors", "envoy.filters.http.router", "envoy.filters.network.tcp_proxy"},
		},
		{
			name: "envoy extensions replace the default set",
			node: &corev3.Node{UserAgentName: "envoy", Extensions: []*corev3.Extension{
				{Name: "envoy.filters.http.router", Category: "envoy.filters.http"},
				{Name: "envoy.filters.http.cors", Category: "envoy.filters.http", Disabled: true},
				{Name: "envoy.transport_sockets.tls", Category: "envoy.transport_sockets.downstream"},
			}},
			kind:  KindEnvoy,
			has:   []string{"envoy.filters.http.router"},
			lacks: []string{"envoy.filters.http.cors", "envoy.transport_sockets.tls"},
		},
		{
			name: "grpc-go by user agent",
			node: &corev3.Node{UserAgentName: "gRPC Go", UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: "1.85.0"},
				ClientFeatures: []string{"xds.config.resource-in-sotw", FeatureNoOverprovisioning}},
			kind:     KindGRPC,
			build:    "1.85.0",
			has:      []string{"envoy.filters.http.router", "envoy.filters.http.fault", "envoy.filters.http.rbac"},
			lacks:    []string{"envoy.filters.http.cors", "envoy.filters.http.local_ratelimit"},
			features: []string{FeatureNoOverprovisioning, "xds.config.resource-in-sotw"},
		},
		{
			name:     "grpc by client feature only",
			node:     &corev3.Node{ClientFeatures: []string{FeatureNoOverprovisioning}},
			kind:     KindGRPC,
			has:      []string{"envoy.filters.http.router"},
			features: []string{FeatureNoOverprovisioning},
		},
		{
			name:  "unknown client",
			node:  &corev3.Node{UserAgentName: "acme-proxy"},
			kind:  KindUnknown,
			has:   []string{"envoy.filters.http.router", "envoy.filters.network.tcp_proxy"},
			lacks: []string{"envoy.filters.http.fault"},
		},
		{
			name: "omnirelay without metadata falls back to extensions",
			node: &corev3.Node{UserAgentName: "omnirelay", UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: "dev"},
				Extensions: []*corev3.Extension{{Name: "envoy.filters.http.cors", Category: "envoy.filters.http"}}},
			kind:  KindOmniRelay,
			build: "dev",
			has:   []string{"envoy.filters.http.cors"},
			lacks: []string{"envoy.filters.http.router"},
		},
		{
			name: "omnirelay metadata of the wrong types is ignored",
			node: &corev3.Node{UserAgentName: "omnirelay", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
				MetadataKey: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
					"build":   structpb.NewNumberValue(3),
					"filters": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewNumberValue(1), structpb.NewStringValue("envoy.filters.http.router")}}),
					"limits": structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
						"neg": structpb.NewNumberValue(-1), "frac": structpb.NewNumberValue(1.5), "str": structpb.NewStringValue("x"),
						"huge": structpb.NewNumberValue(1 << 64),
					}}),
				}}),
			}}},
			kind: KindOmniRelay,
			has:  []string{"envoy.filters.http.router"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := FromNode(tt.node)
			if s.Kind != tt.kind {
				t.Errorf("Kind = %q, want %q", s.Kind, tt.kind)
			}
			if s.Build != tt.build {
				t.Errorf("Build = %q, want %q", s.Build, tt.build)
			}
			for _, f := range tt.has {
				if !s.Has(f) {
					t.Errorf("Has(%q) = false, want true (filters %v)", f, s.Filters)
				}
			}
			for _, f := range tt.lacks {
				if s.Has(f) {
					t.Errorf("Has(%q) = true, want false", f)
				}
			}
			if tt.features != nil && !slices.Equal(s.Features, tt.features) {
				t.Errorf("Features = %v, want %v", s.Features, tt.features)
			}
			if len(s.Limits) != 0 {
				t.Errorf("Limits = %v, want none", s.Limits)
			}
		})
	}
}

func TestDefaultsAreNotShared(t *testing.T) {
	a := FromNode(&corev3.Node{UserAgentName: "gRPC Go"})
	a.Filters[0] = "mutated"
	b := FromNode(&corev3.Node{UserAgentName: "gRPC Go"})
	if b.Filters[0] == "mutated" {
		t.Fatal("FromNode handed out a shared default slice")
	}
}

func TestFingerprint(t *testing.T) {
	base := sampleSet()
	reordered := sampleSet()
	slices.Reverse(reordered.Filters)
	slices.Reverse(reordered.Runtimes)
	tests := []struct {
		name  string
		other Set
		same  bool
	}{
		{name: "identical", other: sampleSet(), same: true},
		{name: "order and duplicates do not matter", other: reordered, same: true},
		{name: "build differs", other: func() Set { s := sampleSet(); s.Build = "1.4.3"; return s }()},
		{name: "filter missing", other: func() Set { s := sampleSet(); s.Filters = s.Filters[1:]; return s }()},
		{name: "limit differs", other: func() Set { s := sampleSet(); s.Limits = map[string]uint64{"max_listeners": 1}; return s }()},
		{name: "kind differs", other: func() Set { s := sampleSet(); s.Kind = KindEnvoy; return s }()},
		{name: "value moves between lists", other: func() Set {
			s := sampleSet()
			s.ABIs = append(s.ABIs, "x")
			return s
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := base.Fingerprint() == tt.other.Fingerprint(); got != tt.same {
				t.Errorf("same fingerprint = %v, want %v", got, tt.same)
			}
		})
	}
	if fp := base.Fingerprint(); len(fp) != 32 {
		t.Errorf("fingerprint %q: want 32 hex digits", fp)
	}
}

func TestSemver(t *testing.T) {
	tests := []struct {
		name, in string
		want     [3]uint32
	}{
		{name: "plain", in: "1.2.3", want: [3]uint32{1, 2, 3}},
		{name: "v prefix and prerelease", in: "v0.14.0-rc.1+abc", want: [3]uint32{0, 14, 0}},
		{name: "not semver", in: "dev", want: [3]uint32{}},
		{name: "two parts", in: "1.2", want: [3]uint32{}},
		{name: "overflow", in: "1.2.99999999999", want: [3]uint32{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := semver(tt.in)
			got := [3]uint32{v.GetMajorNumber(), v.GetMinorNumber(), v.GetPatch()}
			if got != tt.want {
				t.Errorf("semver(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzFromNode feeds arbitrary Node bytes: FromNode must not panic, and
// what it returns must survive Apply/FromNode unchanged.
func FuzzFromNode(f *testing.F) {
	n := &corev3.Node{Id: "x"}
	sampleSet().Apply(n)
	b, _ := proto.Marshal(n)
	f.Add(b)
	g, _ := proto.Marshal(&corev3.Node{UserAgentName: "gRPC Go", ClientFeatures: []string{FeatureNoOverprovisioning}})
	f.Add(g)
	f.Fuzz(func(t *testing.T, data []byte) {
		var node corev3.Node
		if err := proto.Unmarshal(data, &node); err != nil {
			return
		}
		s := FromNode(&node)
		if s.Kind != KindOmniRelay {
			return
		}
		var again corev3.Node
		s.Apply(&again)
		back := FromNode(&again)
		if back.Fingerprint() != s.Fingerprint() {
			t.Fatalf("round trip changed the set:\n%+v\n%+v", s, back)
		}
	})
}

func TestDefault(t *testing.T) {
	tests := []struct {
		name string
		kind Kind
		node *corev3.Node
	}{
		{name: "envoy", kind: KindEnvoy, node: &corev3.Node{UserAgentName: "envoy"}},
		{name: "grpc", kind: KindGRPC, node: &corev3.Node{UserAgentName: "gRPC Java"}},
		{name: "unknown", kind: KindUnknown, node: &corev3.Node{}},
		{name: "bogus kind is unknown", kind: Kind("bogus"), node: &corev3.Node{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, want := Default(tt.kind).Fingerprint(), FromNode(tt.node).Fingerprint(); got != want {
				t.Errorf("Default(%q) differs from FromNode of a bare node:\n%+v\n%+v", tt.kind, Default(tt.kind), FromNode(tt.node))
			}
		})
	}
}

func BenchmarkFromNode(b *testing.B) {
	n := &corev3.Node{}
	sampleSet().Apply(n)
	b.ReportAllocs()
	for b.Loop() {
		_ = FromNode(n).Fingerprint()
	}
}
