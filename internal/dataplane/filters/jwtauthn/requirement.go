package jwtauthn

import (
	"context"
	"errors"
	"fmt"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/strmatch"
)

type reqKind uint8

const (
	reqProvider reqKind = iota
	reqAny
	reqAll
	reqAllowMissing
	reqAllowMissingOrFailed
)

// requirement is a compiled JwtRequirement tree.
type requirement struct {
	kind      reqKind
	prov      *provider
	audiences []string // provider_and_audiences override
	subs      []*requirement
}

func compileRequirement(r *jwtv3.JwtRequirement, provs map[string]*provider, depth int) (*requirement, error) {
	if depth > 8 {
		return nil, errors.New("nested too deeply")
	}
	lookup := func(name string) (*provider, error) {
		p, ok := provs[name]
		if !ok {
			return nil, fmt.Errorf("provider %q: not defined in providers", name)
		}
		return p, nil
	}
	switch t := r.GetRequiresType().(type) {
	case *jwtv3.JwtRequirement_ProviderName:
		p, err := lookup(t.ProviderName)
		if err != nil {
			return nil, fmt.Errorf("provider_name: %w", err)
		}
		return &requirement{kind: reqProvider, prov: p, audiences: p.audiences}, nil
	case *jwtv3.JwtRequirement_ProviderAndAudiences:
		p, err := lookup(t.ProviderAndAudiences.GetProviderName())
		if err != nil {
			return nil, fmt.Errorf("provider_and_audiences: %w", err)
		}
		return &requirement{kind: reqProvider, prov: p, audiences: t.ProviderAndAudiences.GetAudiences()}, nil
	case *jwtv3.JwtRequirement_RequiresAny:
		return compileList(reqAny, "requires_any", t.RequiresAny.GetRequirements(), provs, depth)
	case *jwtv3.JwtRequirement_RequiresAll:
		return compileList(reqAll, "requires_all", t.RequiresAll.GetRequirements(), provs, depth)
	case *jwtv3.JwtRequirement_AllowMissing:
		return &requirement{kind: reqAllowMissing}, nil
	case *jwtv3.JwtRequirement_AllowMissingOrFailed:
		return &requirement{kind: reqAllowMissingOrFailed}, nil
	case *jwtv3.JwtRequirement_ExtractOnlyWithoutValidation:
		// Never trust an unverified token: refuse the config instead.
		return nil, errors.New("extract_only_without_validation: not supported")
	}
	return nil, errors.New("requires_type: not set")
}

func compileList(kind reqKind, field string, rs []*jwtv3.JwtRequirement, provs map[string]*provider, depth int) (*requirement, error) {
	out := &requirement{kind: kind}
	for i, r := range rs {
		c, err := compileRequirement(r, provs, depth+1)
		if err != nil {
			return nil, fmt.Errorf("%s.requirements[%d].%w", field, i, err)
		}
		out.subs = append(out.subs, c)
	}
	return out, nil
}

// verified is what one successful provider check produced.
type verified struct {
	prov    *provider
	loc     *location
	claims  map[string]any
	payload []byte
}

// evalState carries one request's checks so that a provider appearing twice
// in a tree (requires_any of alternatives sharing one) is verified once.
type evalState struct {
	ctx  context.Context
	s    *filter.Stream
	all  []*provider // every provider of the filter, for allow_missing
	done []verified
}

// check evaluates r. It returns nil, errMissing or errInvalid; successes are
// recorded in st.done.
func (st *evalState) check(r *requirement) error {
	switch r.kind {
	case reqProvider:
		return st.checkProvider(r.prov, r.audiences)
	case reqAny:
		// Envoy reports the first sub-requirement's error when all fail;
		// invalid beats missing so a bad token is never reported as absent.
		var firstErr error
		for _, sub := range r.subs {
			err := st.check(sub)
			if err == nil {
				return nil
			}
			if firstErr == nil || errors.Is(err, errInvalid) {
				firstErr = err
			}
		}
		if firstErr == nil {
			firstErr = errMissing
		}
		return firstErr
	case reqAll:
		for _, sub := range r.subs {
			if err := st.check(sub); err != nil {
				return err
			}
		}
		return nil
	case reqAllowMissing:
		// A token that is present must be valid for some provider that
		// reads it from where it was found.
		present := false
		for _, p := range st.all {
			tok, _ := p.extract(st.s.Req)
			if tok == "" {
				continue
			}
			present = true
			if st.checkProvider(p, p.audiences) == nil {
				return nil
			}
		}
		if present {
			return errInvalid
		}
		return nil
	case reqAllowMissingOrFailed:
		for _, p := range st.all {
			_ = st.checkProvider(p, p.audiences)
		}
		return nil
	}
	return errInvalid
}

func (st *evalState) checkProvider(p *provider, audiences []string) error {
	for _, v := range st.done {
		if v.prov == p {
			return nil
		}
	}
	tok, loc := p.extract(st.s.Req)
	if tok == "" {
		return errMissing
	}
	claims, payload, err := p.verify(st.ctx, tok, audiences)
	if err != nil {
		return errInvalid
	}
	st.done = append(st.done, verified{prov: p, loc: loc, claims: claims, payload: payload})
	return nil
}

// rule is a compiled RequirementRule: a route-style match and the
// requirement it selects (nil: no requirement).
type rule struct {
	path    pathMatch
	headers strmatch.Headers
	req     *requirement
}

type pathMatch struct {
	kind          uint8 // 0 prefix, 1 exact, 2 path-separated prefix, 3 regex
	value         string
	caseSensitive bool
	re            *strmatch.String
}

func compileRouteMatch(m *routev3.RouteMatch) (pathMatch, strmatch.Headers, error) {
	pm := pathMatch{caseSensitive: m.GetCaseSensitive() == nil || m.GetCaseSensitive().GetValue()}
	switch t := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		pm.kind, pm.value = 0, t.Prefix
	case *routev3.RouteMatch_Path:
		pm.kind, pm.value = 1, t.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		pm.kind, pm.value = 2, t.PathSeparatedPrefix
	case *routev3.RouteMatch_SafeRegex:
		re, err := strmatch.CompileString(regexMatcher(t.SafeRegex))
		if err != nil {
			return pm, nil, fmt.Errorf("safe_regex: %w", err)
		}
		pm.kind, pm.re = 3, &re
	default:
		return pm, nil, errors.New("path_specifier: only prefix, path, path_separated_prefix and safe_regex are supported")
	}
	if len(m.GetQueryParameters()) > 0 || m.GetGrpc() != nil || m.GetTlsContext() != nil || m.GetRuntimeFraction() != nil {
		return pm, nil, errors.New("only path and headers matching is supported")
	}
	hs, err := strmatch.CompileHeaders("headers", m.GetHeaders())
	if err != nil {
		return pm, nil, err
	}
	return pm, hs, nil
}

func (m *pathMatch) match(path []byte) bool {
	p := string(path)
	switch m.kind {
	case 3:
		return m.re.Match(path)
	case 1:
		if m.caseSensitive {
			return p == m.value
		}
		return strings.EqualFold(p, m.value)
	}
	if len(p) < len(m.value) {
		return false
	}
	head := p[:len(m.value)]
	if m.caseSensitive && head != m.value || !m.caseSensitive && !strings.EqualFold(head, m.value) {
		return false
	}
	if m.kind == 2 {
		return len(p) == len(m.value) || p[len(m.value)] == '/'
	}
	return true
}
