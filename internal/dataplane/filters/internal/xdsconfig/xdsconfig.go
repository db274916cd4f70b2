// Package xdsconfig holds what the built-in HTTP filters share while they
// compile their xDS typed config: strict decoding of an anypb.Any, fractional
// percentages, and nil-safe stats handles. It runs at config-load time only;
// nothing here is on the request path except Percent.Sample.
package xdsconfig

import (
	"fmt"
	"math/rand/v2"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
)

// validator is implemented by every go-control-plane message (protoc-gen-validate).
type validator interface {
	ValidateAll() error
}

// Unmarshal decodes cfg into m strictly: the type URL must name m's type,
// unknown fields anywhere in the message are an error (a newer control plane
// asked for something this build would silently ignore), and the
// protoc-gen-validate rules must hold.
func Unmarshal(cfg *anypb.Any, m proto.Message) error {
	if cfg == nil {
		return fmt.Errorf("typed_config: missing, want %s", m.ProtoReflect().Descriptor().FullName())
	}
	if err := cfg.UnmarshalTo(m); err != nil {
		return fmt.Errorf("typed_config: %w", err)
	}
	if path := unknownField(m.ProtoReflect(), string(m.ProtoReflect().Descriptor().Name())); path != "" {
		return fmt.Errorf("typed_config: %s has fields unknown to this build", path)
	}
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("typed_config: %w", err)
		}
	}
	return nil
}

// unknownField returns the path of the first message holding unknown fields,
// or "".
func unknownField(m protoreflect.Message, path string) string {
	if len(m.GetUnknown()) > 0 {
		return path
	}
	found := ""
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := path + "." + string(fd.Name())
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len() && found == ""; i++ {
				found = unknownField(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i))
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				found = unknownField(mv.Message(), fmt.Sprintf("%s[%v]", p, k.Interface()))
				return found == ""
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			found = unknownField(v.Message(), p)
		}
		return found == ""
	})
	return found
}

// Percent is a compiled envoy.type.v3.FractionalPercent. The zero value is 0%.
type Percent struct {
	num, den uint32
}

// All is 100%.
func All() Percent { return Percent{num: 1, den: 1} }

// None is 0%.
func None() Percent { return Percent{den: 100} }

// FromFraction compiles p; nil means def. A numerator above the denominator
// is clamped, as Envoy does.
func FromFraction(p *typev3.FractionalPercent, def Percent) (Percent, error) {
	if p == nil {
		return def, nil
	}
	var den uint32
	switch p.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		den = 100
	case typev3.FractionalPercent_TEN_THOUSAND:
		den = 10_000
	case typev3.FractionalPercent_MILLION:
		den = 1_000_000
	default:
		return Percent{}, fmt.Errorf("denominator: unknown value %d", p.GetDenominator())
	}
	return Percent{num: min(p.GetNumerator(), den), den: den}, nil
}

// FromRuntime compiles a RuntimeFractionalPercent. There is no runtime layer
// in OmniRelay: runtime_key is ignored and default_value applies.
func FromRuntime(p *corev3.RuntimeFractionalPercent, def Percent) (Percent, error) {
	if p == nil {
		return def, nil
	}
	pc, err := FromFraction(p.GetDefaultValue(), def)
	if err != nil {
		return Percent{}, fmt.Errorf("default_value: %w", err)
	}
	return pc, nil
}

// Sample reports whether this request falls in the percentage. 0% and 100%
// never consult the random source, so tests and "always"/"never" configs are
// deterministic.
func (p Percent) Sample() bool {
	switch {
	case p.num == 0:
		return false
	case p.num >= p.den:
		return true
	}
	return rand.Uint32N(p.den) < p.num
}

// CapNumerator returns p with its numerator lowered to n when n is smaller:
// request headers may reduce a configured percentage, never raise it.
func (p Percent) CapNumerator(n uint64) Percent {
	if n < uint64(p.num) {
		p.num = uint32(n)
	}
	return p
}

// Numerator and Denominator expose the compiled fraction.
func (p Percent) Numerator() uint32   { return p.num }
func (p Percent) Denominator() uint32 { return p.den }

// String renders p for logs and errors.
func (p Percent) String() string { return fmt.Sprintf("%d/%d", p.num, p.den) }

type nopCounter struct{}

func (nopCounter) Inc() {}

// Counter returns the named counter from env.Stats, or a counter that drops
// increments when the host gave no stats sink. Filters resolve counters once
// at build time so that the request path only calls Inc.
func Counter(env *filter.Env, name string, labels ...string) filter.Counter {
	if env == nil || env.Stats == nil {
		return nopCounter{}
	}
	if c := env.Stats.Counter(name, labels...); c != nil {
		return c
	}
	return nopCounter{}
}
