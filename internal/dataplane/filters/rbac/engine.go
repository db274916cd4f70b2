package rbac

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/omnirelay/omnirelay/internal/dataplane/filters/jwtauthn"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/dataplane/strmatch"
)

// Input is what a policy looks at. HTTP fills every field; the L4 variant
// (netrbac) leaves Req nil, so HTTP-only matchers (header, url_path) never
// match there, as in Envoy's network RBAC filter.
type Input struct {
	// Claims are the stream's verified JWT payloads (Stream.Attrs.Claims).
	Claims []jwtauthn.Payload
	Req    *message.Request
	Source netip.AddrPort // the downstream peer (direct_remote_ip)
	// Client is the trusted client address (remote_ip): the x-forwarded-for
	// entry the listener's trusted hops point at, the peer by default.
	Client netip.Addr
	Dest   netip.AddrPort
	// PeerIdentity is the peer's SPIFFE ID from mTLS, "" without one.
	PeerIdentity string
	// SNI is the TLS server name the peer asked for.
	SNI string
}

// Engine is a compiled envoy.config.rbac.v3.RBAC: immutable, shared.
type Engine struct {
	deny     bool
	policies []policy
}

type policy struct {
	name  string
	perms []matcher
	prins []matcher
	cond  *condition // nil: no condition
}

// matcher is one compiled permission or principal.
type matcher func(in *Input) bool

// Compile builds an engine. Errors name the policy and field. env holds the
// CEL declarations (NewCELEnv); cost bounds each condition evaluation.
func Compile(pb *rbacv3.RBAC, env *CELEnv) (*Engine, error) {
	e := &Engine{}
	switch pb.GetAction() {
	case rbacv3.RBAC_ALLOW:
	case rbacv3.RBAC_DENY:
		e.deny = true
	default:
		return nil, fmt.Errorf("action: %s not supported (ALLOW or DENY)", pb.GetAction())
	}
	if pb.GetAuditLoggingOptions() != nil {
		return nil, errors.New("audit_logging_options: not supported")
	}
	names := make([]string, 0, len(pb.GetPolicies()))
	for n := range pb.GetPolicies() {
		names = append(names, n)
	}
	slices.Sort(names) // first match is reported: make it deterministic
	for _, n := range names {
		p, err := compilePolicy(n, pb.GetPolicies()[n], env)
		if err != nil {
			return nil, fmt.Errorf("policies[%s].%w", n, err)
		}
		e.policies = append(e.policies, p)
	}
	return e, nil
}

func compilePolicy(name string, pb *rbacv3.Policy, env *CELEnv) (policy, error) {
	p := policy{name: name}
	for i, pm := range pb.GetPermissions() {
		m, err := compilePermission(pm, 0)
		if err != nil {
			return p, fmt.Errorf("permissions[%d].%w", i, err)
		}
		p.perms = append(p.perms, m)
	}
	for i, pr := range pb.GetPrincipals() {
		m, err := compilePrincipal(pr, 0)
		if err != nil {
			return p, fmt.Errorf("principals[%d].%w", i, err)
		}
		p.prins = append(p.prins, m)
	}
	switch {
	case pb.GetCheckedCondition() != nil:
		return p, errors.New("checked_condition: not supported (send condition)")
	case pb.GetCondition() != nil:
		if env == nil {
			return p, errors.New("condition: CEL is not available here")
		}
		c, err := env.compile(pb.GetCondition())
		if err != nil {
			return p, fmt.Errorf("condition: %w", err)
		}
		p.cond = c
	}
	return p, nil
}

// Evaluate applies the engine: allowed is the verdict, policy the name of
// the policy that matched ("" when none did).
func (e *Engine) Evaluate(in *Input) (allowed bool, policy string) {
	for i := range e.policies {
		if e.policies[i].matches(in, e.deny) {
			return !e.deny, e.policies[i].name
		}
	}
	return e.deny, ""
}

func (p *policy) matches(in *Input, deny bool) bool {
	if !anyMatch(p.perms, in) || !anyMatch(p.prins, in) {
		return false
	}
	if p.cond == nil {
		return true
	}
	ok, err := p.cond.eval(in)
	if err != nil {
		// Fail closed: an erroring (or over-cost) condition makes a DENY
		// policy apply and an ALLOW policy not.
		return deny
	}
	return ok
}

func anyMatch(ms []matcher, in *Input) bool {
	for _, m := range ms {
		if m(in) {
			return true
		}
	}
	return false
}

const maxDepth = 16

func compilePermission(pb *rbacv3.Permission, depth int) (matcher, error) {
	if depth > maxDepth {
		return nil, errors.New("nested too deeply")
	}
	list := func(field string, ps []*rbacv3.Permission) ([]matcher, error) {
		var out []matcher
		for i, x := range ps {
			m, err := compilePermission(x, depth+1)
			if err != nil {
				return nil, fmt.Errorf("%s.rules[%d].%w", field, i, err)
			}
			out = append(out, m)
		}
		return out, nil
	}
	switch r := pb.GetRule().(type) {
	case *rbacv3.Permission_Any:
		return func(*Input) bool { return true }, nil
	case *rbacv3.Permission_AndRules:
		ms, err := list("and_rules", r.AndRules.GetRules())
		return allOf(ms), err
	case *rbacv3.Permission_OrRules:
		ms, err := list("or_rules", r.OrRules.GetRules())
		return oneOf(ms), err
	case *rbacv3.Permission_NotRule:
		m, err := compilePermission(r.NotRule, depth+1)
		if err != nil {
			return nil, fmt.Errorf("not_rule.%w", err)
		}
		return func(in *Input) bool { return !m(in) }, nil
	case *rbacv3.Permission_Header:
		return headerMatcher(r.Header)
	case *rbacv3.Permission_UrlPath:
		return pathMatcher(r.UrlPath)
	case *rbacv3.Permission_DestinationPort:
		port := r.DestinationPort
		return func(in *Input) bool { return uint32(in.Dest.Port()) == port }, nil
	case *rbacv3.Permission_DestinationPortRange:
		lo, hi := int64(r.DestinationPortRange.GetStart()), int64(r.DestinationPortRange.GetEnd())
		return func(in *Input) bool { p := int64(in.Dest.Port()); return p >= lo && p < hi }, nil
	case *rbacv3.Permission_DestinationIp:
		pfx, err := cidr(r.DestinationIp)
		if err != nil {
			return nil, fmt.Errorf("destination_ip: %w", err)
		}
		return func(in *Input) bool { return pfx.Contains(in.Dest.Addr().Unmap()) }, nil
	case *rbacv3.Permission_RequestedServerName:
		sm, err := strmatch.CompileString(r.RequestedServerName)
		if err != nil {
			return nil, fmt.Errorf("requested_server_name: %w", err)
		}
		return func(in *Input) bool { return sm.MatchString(in.SNI) }, nil
	case *rbacv3.Permission_Metadata:
		return metadataMatcher(r.Metadata)
	}
	return nil, fmt.Errorf("rule: %T not supported", pb.GetRule())
}

func compilePrincipal(pb *rbacv3.Principal, depth int) (matcher, error) {
	if depth > maxDepth {
		return nil, errors.New("nested too deeply")
	}
	list := func(field string, ps []*rbacv3.Principal) ([]matcher, error) {
		var out []matcher
		for i, x := range ps {
			m, err := compilePrincipal(x, depth+1)
			if err != nil {
				return nil, fmt.Errorf("%s.ids[%d].%w", field, i, err)
			}
			out = append(out, m)
		}
		return out, nil
	}
	ipMatcher := func(field string, c *corev3.CidrRange) (matcher, error) {
		pfx, err := cidr(c)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return func(in *Input) bool { return pfx.Contains(in.Source.Addr().Unmap()) }, nil
	}
	switch r := pb.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		return func(*Input) bool { return true }, nil
	case *rbacv3.Principal_AndIds:
		ms, err := list("and_ids", r.AndIds.GetIds())
		return allOf(ms), err
	case *rbacv3.Principal_OrIds:
		ms, err := list("or_ids", r.OrIds.GetIds())
		return oneOf(ms), err
	case *rbacv3.Principal_NotId:
		m, err := compilePrincipal(r.NotId, depth+1)
		if err != nil {
			return nil, fmt.Errorf("not_id.%w", err)
		}
		return func(in *Input) bool { return !m(in) }, nil
	case *rbacv3.Principal_Authenticated_:
		if r.Authenticated.GetPrincipalName() == nil {
			// Any authenticated peer.
			return func(in *Input) bool { return in.PeerIdentity != "" }, nil
		}
		sm, err := strmatch.CompileString(r.Authenticated.GetPrincipalName())
		if err != nil {
			return nil, fmt.Errorf("authenticated.principal_name: %w", err)
		}
		return func(in *Input) bool { return in.PeerIdentity != "" && sm.MatchString(in.PeerIdentity) }, nil
	case *rbacv3.Principal_DirectRemoteIp:
		return ipMatcher("direct_remote_ip", r.DirectRemoteIp)
	case *rbacv3.Principal_RemoteIp:
		pfx, err := cidr(r.RemoteIp)
		if err != nil {
			return nil, fmt.Errorf("remote_ip: %w", err)
		}
		return func(in *Input) bool {
			if in.Client.IsValid() {
				return pfx.Contains(in.Client.Unmap())
			}
			return pfx.Contains(in.Source.Addr().Unmap())
		}, nil
	case *rbacv3.Principal_SourceIp:
		return ipMatcher("source_ip", r.SourceIp)
	case *rbacv3.Principal_Header:
		return headerMatcher(r.Header)
	case *rbacv3.Principal_UrlPath:
		return pathMatcher(r.UrlPath)
	case *rbacv3.Principal_Metadata:
		return metadataMatcher(r.Metadata)
	}
	return nil, fmt.Errorf("identifier: %T not supported", pb.GetIdentifier())
}

func allOf(ms []matcher) matcher {
	return func(in *Input) bool {
		for _, m := range ms {
			if !m(in) {
				return false
			}
		}
		return true
	}
}

func oneOf(ms []matcher) matcher {
	return func(in *Input) bool { return anyMatch(ms, in) }
}

func headerMatcher(h *routev3.HeaderMatcher) (matcher, error) {
	hm, err := strmatch.CompileRequestHeader(h)
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	return func(in *Input) bool { return in.Req != nil && hm.MatchRequest(in.Req) }, nil
}

func pathMatcher(p *matcherv3.PathMatcher) (matcher, error) {
	sm, err := strmatch.CompileString(p.GetPath())
	if err != nil {
		return nil, fmt.Errorf("url_path.path: %w", err)
	}
	return func(in *Input) bool { return in.Req != nil && sm.Match(in.Req.PathOnly()) }, nil
}

func cidr(c *corev3.CidrRange) (netip.Prefix, error) {
	a, err := netip.ParseAddr(c.GetAddressPrefix())
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("address_prefix %q: %w", c.GetAddressPrefix(), err)
	}
	a = a.Unmap()
	bits := a.BitLen()
	if c.GetPrefixLen() != nil {
		bits = int(c.GetPrefixLen().GetValue())
	}
	pfx, err := a.Prefix(bits)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("prefix_len %d: %w", bits, err)
	}
	return pfx, nil
}

// metadataMatcher supports the metadata Envoy's jwt_authn publishes: filter
// jwtauthn.MetadataNamespace, path [payload_in_metadata key, claim, ...].
func metadataMatcher(m *matcherv3.MetadataMatcher) (matcher, error) {
	if m.GetFilter() != jwtauthn.MetadataNamespace {
		return nil, fmt.Errorf("metadata.filter: %q not supported (only %s)", m.GetFilter(), jwtauthn.MetadataNamespace)
	}
	if len(m.GetPath()) == 0 {
		return nil, errors.New("metadata.path: empty")
	}
	path := make([]string, len(m.GetPath()))
	for i, seg := range m.GetPath() {
		path[i] = seg.GetKey()
	}
	vm, err := compileValue(m.GetValue(), 0)
	if err != nil {
		return nil, fmt.Errorf("metadata.value: %w", err)
	}
	invert := m.GetInvert()
	return func(in *Input) bool {
		v, ok := jwtauthn.Lookup(in.Claims, path[0], path[1:])
		return vm(v, ok) != invert
	}, nil
}

type valueMatcher func(v any, present bool) bool

func compileValue(vm *matcherv3.ValueMatcher, depth int) (valueMatcher, error) {
	if depth > maxDepth {
		return nil, errors.New("nested too deeply")
	}
	switch p := vm.GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_StringMatch:
		sm, err := strmatch.CompileString(p.StringMatch)
		if err != nil {
			return nil, fmt.Errorf("string_match: %w", err)
		}
		return func(v any, ok bool) bool { s, isStr := v.(string); return ok && isStr && sm.MatchString(s) }, nil
	case *matcherv3.ValueMatcher_BoolMatch:
		want := p.BoolMatch
		return func(v any, ok bool) bool { b, isBool := v.(bool); return ok && isBool && b == want }, nil
	case *matcherv3.ValueMatcher_PresentMatch:
		want := p.PresentMatch
		return func(_ any, ok bool) bool { return ok == want }, nil
	case *matcherv3.ValueMatcher_NullMatch_:
		return func(v any, ok bool) bool { return ok && v == nil }, nil
	case *matcherv3.ValueMatcher_DoubleMatch:
		dm := p.DoubleMatch
		return func(v any, ok bool) bool {
			f, isNum := v.(float64)
			if !ok || !isNum {
				return false
			}
			if r := dm.GetRange(); r != nil {
				return f >= r.GetStart() && f < r.GetEnd()
			}
			return f == dm.GetExact()
		}, nil
	case *matcherv3.ValueMatcher_ListMatch:
		el, err := compileValue(p.ListMatch.GetOneOf(), depth+1)
		if err != nil {
			return nil, fmt.Errorf("list_match.one_of: %w", err)
		}
		return func(v any, ok bool) bool {
			l, isList := v.([]any)
			if !ok || !isList {
				return false
			}
			for _, x := range l {
				if el(x, true) {
					return true
				}
			}
			return false
		}, nil
	case *matcherv3.ValueMatcher_OrMatch:
		var ms []valueMatcher
		for i, x := range p.OrMatch.GetValueMatchers() {
			m, err := compileValue(x, depth+1)
			if err != nil {
				return nil, fmt.Errorf("or_match[%d]: %w", i, err)
			}
			ms = append(ms, m)
		}
		return func(v any, ok bool) bool {
			for _, m := range ms {
				if m(v, ok) {
					return true
				}
			}
			return false
		}, nil
	}
	return nil, errors.New("match_pattern: not set")
}
