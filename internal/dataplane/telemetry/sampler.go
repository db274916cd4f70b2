package telemetry

import (
	"encoding/binary"
	"fmt"
)

// SamplerKind selects how a root (or, for ParentBased, any) decision is made.
type SamplerKind uint8

const (
	// AlwaysOn records every request.
	AlwaysOn SamplerKind = iota + 1
	// AlwaysOff records none (context is still propagated).
	AlwaysOff
	// Ratio records a fraction of traces, decided from the trace id so that
	// every hop of one trace decides the same way.
	Ratio
	// ParentBased follows the caller's sampled flag when there is a caller,
	// and the Ratio otherwise.
	ParentBased
)

// Sampler decides whether a span is recorded.
type Sampler struct {
	Kind  SamplerKind
	Ratio float64 // for Ratio and for ParentBased roots, in [0,1]
	bound uint64
}

// NewSampler validates and prepares a sampler.
func NewSampler(kind SamplerKind, ratio float64) (Sampler, error) {
	if ratio < 0 || ratio > 1 || ratio != ratio {
		return Sampler{}, fmt.Errorf("sampling ratio %v is not in [0, 1]", ratio)
	}
	switch kind {
	case AlwaysOn, AlwaysOff, Ratio, ParentBased:
	default:
		return Sampler{}, fmt.Errorf("unknown sampler kind %d", kind)
	}
	// As the OTel SDK's TraceIDRatioBased: compare the trace id's low 63
	// bits with ratio * 2^63, so proxies of one trace agree.
	return Sampler{Kind: kind, Ratio: ratio, bound: uint64(ratio * (1 << 63))}, nil
}

func (s *Sampler) ratio(id TraceID) bool {
	if s.Ratio >= 1 {
		return true
	}
	return binary.BigEndian.Uint64(id[8:16])>>1 < s.bound
}

// decide returns the sampling decision for a span of trace id whose caller
// (when hasParent) said parentSampled.
func (s *Sampler) decide(id TraceID, hasParent, parentSampled bool) bool {
	switch s.Kind {
	case AlwaysOn:
		return true
	case AlwaysOff:
		return false
	case Ratio:
		return s.ratio(id)
	case ParentBased:
		if hasParent {
			return parentSampled
		}
		return s.ratio(id)
	}
	return false
}
