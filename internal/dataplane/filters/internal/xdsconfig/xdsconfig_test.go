package xdsconfig

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
)

const hmURL = "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"

func withUnknown(b []byte) []byte {
	b = protowire.AppendTag(b, 999, protowire.VarintType)
	return protowire.AppendVarint(b, 1)
}

func TestUnmarshal(t *testing.T) {
	nested := protowire.AppendTag(nil, 1, protowire.BytesType) // HeaderMutation.mutations
	nested = protowire.AppendBytes(nested, withUnknown(nil))
	tests := []struct {
		name string
		any  *anypb.Any
		want string // "" means success
	}{
		{"valid", &anypb.Any{TypeUrl: hmURL}, ""},
		{"nil", nil, "typed_config: missing"},
		{"top-level unknown field", &anypb.Any{TypeUrl: hmURL, Value: withUnknown(nil)}, "HeaderMutation has fields unknown"},
		{"nested unknown field", &anypb.Any{TypeUrl: hmURL, Value: nested}, "HeaderMutation.mutations has fields unknown"},
		{"wrong type", &anypb.Any{TypeUrl: "type.googleapis.com/google.protobuf.Duration"}, "typed_config"},
		{"garbage", &anypb.Any{TypeUrl: hmURL, Value: []byte{0xff, 0xff}}, "typed_config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Unmarshal(tt.any, &hmv3.HeaderMutation{})
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Unmarshal: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestUnmarshalValidates(t *testing.T) {
	a, err := anypb.New(&lrlv3.LocalRateLimit{}) // stat_prefix is required
	if err != nil {
		t.Fatal(err)
	}
	if err := Unmarshal(a, &lrlv3.LocalRateLimit{}); err == nil || !strings.Contains(err.Error(), "StatPrefix") {
		t.Fatalf("error = %v, want a StatPrefix validation error", err)
	}
}

func TestPercent(t *testing.T) {
	tests := []struct {
		name     string
		in       *typev3.FractionalPercent
		def      Percent
		wantNum  uint32
		wantDen  uint32
		always   bool
		never    bool
		capTo    uint64
		capNever bool
	}{
		{"nil uses default all", nil, All(), 1, 1, true, false, 0, true},
		{"nil uses default none", nil, None(), 0, 100, false, true, 0, true},
		{"hundred", &typev3.FractionalPercent{Numerator: 100}, None(), 100, 100, true, false, 5, false},
		{"clamped", &typev3.FractionalPercent{Numerator: 500}, None(), 100, 100, true, false, 0, true},
		{"ten thousand", &typev3.FractionalPercent{Numerator: 10_000, Denominator: typev3.FractionalPercent_TEN_THOUSAND}, None(), 10_000, 10_000, true, false, 0, true},
		{"million zero", &typev3.FractionalPercent{Denominator: typev3.FractionalPercent_MILLION}, All(), 0, 1_000_000, false, true, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := FromFraction(tt.in, tt.def)
			if err != nil {
				t.Fatal(err)
			}
			if p.Numerator() != tt.wantNum || p.Denominator() != tt.wantDen {
				t.Fatalf("got %v, want %d/%d", p, tt.wantNum, tt.wantDen)
			}
			for i := 0; i < 100; i++ {
				got := p.Sample()
				if tt.always && !got || tt.never && got {
					t.Fatalf("Sample() = %v on try %d", got, i)
				}
			}
			if c := p.CapNumerator(tt.capTo); tt.capNever && c.Sample() {
				t.Fatalf("capped to %d still sampled", tt.capTo)
			}
		})
	}
	if _, err := FromFraction(&typev3.FractionalPercent{Denominator: 7}, None()); err == nil {
		t.Fatal("unknown denominator accepted")
	}
	half, _ := FromFraction(&typev3.FractionalPercent{Numerator: 50}, None())
	hits := 0
	for i := 0; i < 10_000; i++ {
		if half.Sample() {
			hits++
		}
	}
	if hits < 4_000 || hits > 6_000 { // ~20 standard deviations from 5,000: a real bug, not noise
		t.Fatalf("50%% sampled %d of 10000", hits)
	}
}

func TestFromRuntime(t *testing.T) {
	p, err := FromRuntime(&corev3.RuntimeFractionalPercent{RuntimeKey: "ignored",
		DefaultValue: &typev3.FractionalPercent{Numerator: 3}}, All())
	if err != nil || p.Numerator() != 3 || p.Denominator() != 100 {
		t.Fatalf("FromRuntime = %v, %v", p, err)
	}
	if p, _ := FromRuntime(nil, None()); p.Sample() {
		t.Fatal("nil runtime percent did not use the default")
	}
}

type countingStats struct{ names []string }

func (c *countingStats) Counter(name string, _ ...string) filter.Counter {
	c.names = append(c.names, name)
	return nil // a sink may return nil; Counter must still be usable
}

func TestCounterNilSafe(t *testing.T) {
	Counter(nil, "a").Inc()
	Counter(&filter.Env{}, "b").Inc()
	st := &countingStats{}
	Counter(&filter.Env{Stats: st}, "c", "k", "v").Inc()
	if len(st.names) != 1 || st.names[0] != "c" {
		t.Fatalf("stats saw %v", st.names)
	}
}
