// Package rbac is the role-based access control HTTP filter
// (envoy.extensions.filters.http.rbac.v3.RBAC) and the policy engine it
// shares with the L4 variant (internal/dataplane/netrbac).
//
// A policy matches when one of its permissions (what is asked: path, method
// and other headers, destination port, SNI) and one of its principals (who
// asks: the peer's SPIFFE ID from mTLS, source IP, headers, verified JWT
// claims) match, and its optional CEL condition (cel.dev/cel-go, cost
// limited) is true. An ALLOW filter lets a request through when some policy
// matches, a DENY filter stops it when one does. Deny wins when both are
// configured because each is its own filter in the chain and any 403 ends the
// request, as in Envoy. shadow_rules are evaluated and counted (and logged on
// a would-be denial) but never block.
//
// JWT claims come from the jwt_authn filter earlier in the chain through
// the stream's typed attributes, Stream.Attrs.Claims (metadata matchers with filter
// "envoy.filters.http.jwt_authn", path [payload_in_metadata, claim...]).
//
// Counters (env.Stats): rbac.allowed, rbac.denied, rbac.shadow_allowed,
// rbac.shadow_denied.
package rbac

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/localreply"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters/internal/xdsconfig"
)

// ConfigType is the xDS config message the factory builds from.
const ConfigType = "envoy.extensions.filters.http.rbac.v3.RBAC"

// deniedBody is Envoy's body: it names no policy, rule or identity.
const deniedBody = "RBAC: access denied"

// Factory builds RBAC filters. The zero value is ready to use; Log receives
// shadow denials (slog.Default when nil).
type Factory struct {
	Log *slog.Logger
}

var (
	_ filter.Factory      = Factory{}
	_ filter.RouteFactory = Factory{}
)

// ConfigType implements filter.Factory.
func (Factory) ConfigType() string { return ConfigType }

// Build implements filter.Factory.
func (f Factory) Build(cfg *anypb.Any, env *filter.Env) (filter.Filter, error) {
	var pb rbacv3.RBAC
	if err := xdsconfig.Unmarshal(cfg, &pb); err != nil {
		return nil, fmt.Errorf("rbac: %w", err)
	}
	flt, err := f.compile(&pb, env)
	if err != nil {
		return nil, fmt.Errorf("rbac: %w", err)
	}
	return flt, nil
}

// BuildOverride implements filter.RouteFactory: cfg is an RBACPerRoute whose
// rbac replaces the listener's; without rbac the filter is off on the route.
func (f Factory) BuildOverride(cfg *anypb.Any, _ filter.Filter, env *filter.Env) (filter.Filter, error) {
	var pb rbacv3.RBACPerRoute
	if err := xdsconfig.Unmarshal(cfg, &pb); err != nil {
		return nil, fmt.Errorf("rbac per-route: %w", err)
	}
	if pb.GetRbac() == nil {
		return filter.Disabled, nil
	}
	flt, err := f.compile(pb.GetRbac(), env)
	if err != nil {
		return nil, fmt.Errorf("rbac per-route: rbac.%w", err)
	}
	return flt, nil
}

func (f Factory) compile(pb *rbacv3.RBAC, env *filter.Env) (*authz, error) {
	if pb.GetMatcher() != nil || pb.GetShadowMatcher() != nil {
		return nil, errors.New("matcher/shadow_matcher: not supported (use rules/shadow_rules)")
	}
	celEnv, err := NewCELEnv(0)
	if err != nil {
		return nil, err
	}
	a := &authz{
		log:           f.Log,
		allowed:       xdsconfig.Counter(env, "rbac.allowed"),
		denied:        xdsconfig.Counter(env, "rbac.denied"),
		shadowAllowed: xdsconfig.Counter(env, "rbac.shadow_allowed"),
		shadowDenied:  xdsconfig.Counter(env, "rbac.shadow_denied"),
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if env != nil {
		a.name = env.Name
	}
	if pb.GetRules() != nil {
		if a.rules, err = Compile(pb.GetRules(), celEnv); err != nil {
			return nil, fmt.Errorf("rules.%w", err)
		}
	}
	if pb.GetShadowRules() != nil {
		if a.shadow, err = Compile(pb.GetShadowRules(), celEnv); err != nil {
			return nil, fmt.Errorf("shadow_rules.%w", err)
		}
	}
	return a, nil
}

// authz is one compiled filter, immutable and shared by all streams.
type authz struct {
	name   string
	rules  *Engine // nil: enforce nothing
	shadow *Engine // nil: no dry run
	log    *slog.Logger

	allowed, denied, shadowAllowed, shadowDenied filter.Counter
}

var _ filter.Filter = (*authz)(nil)

// InputFor describes a stream to the engine.
func InputFor(s *filter.Stream) Input {
	in := Input{
		Claims:       s.Attrs.Claims,
		Req:          s.Req,
		Source:       s.Downstream.RemoteAddr,
		Client:       s.Client,
		Dest:         s.Downstream.LocalAddr,
		PeerIdentity: s.Downstream.PeerIdentity,
	}
	if s.Downstream.TLS != nil {
		in.SNI = s.Downstream.TLS.ServerName
	}
	return in
}

// OnRequest implements filter.Filter.
func (a *authz) OnRequest(s *filter.Stream) filter.Status {
	in := InputFor(s)
	if a.shadow != nil {
		if ok, pol := a.shadow.Evaluate(&in); ok {
			a.shadowAllowed.Inc()
		} else {
			a.shadowDenied.Inc()
			a.log.LogAttrs(s.Ctx, slog.LevelInfo, "rbac shadow denied",
				slog.String("filter", a.name), slog.String("policy", pol),
				slog.String("path", string(s.Req.PathOnly())), slog.String("peer", in.PeerIdentity),
				slog.String("source", in.Source.Addr().String()))
		}
	}
	if a.rules == nil {
		return filter.Continue
	}
	if ok, _ := a.rules.Evaluate(&in); !ok {
		a.denied.Inc()
		localreply.Send(s, http.StatusForbidden, localreply.NoGRPCStatus, deniedBody)
		return filter.Stop
	}
	a.allowed.Inc()
	return filter.Continue
}

// OnResponse implements filter.Filter.
func (a *authz) OnResponse(*filter.Stream) {}
