// Package router owns routing: the route table compiled from an xDS
// RouteConfiguration (virtual hosts, matchers, actions) and the router, the
// terminal of the HTTP filter chain that forwards a stream to a cluster with
// timeouts, retries and backoff.
//
// Matching is hand-written (not a library) because it runs on every request
// and must not allocate: hosts are looked up in maps keyed by lower-cased
// bytes, paths and headers are compared in place.
package router

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"sort"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/headerops"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/dataplane/strmatch"
)

// Table is an immutable compiled RouteConfiguration.
type Table struct {
	Name     string
	exact    map[string]*VirtualHost
	suffixes []wildcard // "*.example.com" longest first
	prefixes []wildcard // "www.example.*" longest first
	any      *VirtualHost
	headers  headerOps // route_config level mutations (compile time only)
	// routes holds every route of every virtual host, by filter.Route.ID.
	routes []*Route
}

type wildcard struct {
	part string // suffix incl. the dot (".example.com") or prefix incl. dot
	vh   *VirtualHost
}

// VirtualHost is a compiled virtual host.
type VirtualHost struct {
	Name    string
	routes  []*Route
	headers headerOps // this level's mutations (compile time only)
	retry   *RetryPolicy
	// override is per-filter config at virtual host level, by chain index.
	override []filter.Filter
}

// ActionKind says what a route does.
type ActionKind uint8

const (
	ActionCluster ActionKind = iota
	ActionRedirect
	ActionDirect
)

// Route is a compiled route. Its filter.Route (what the chain and filters
// see) lives inside it; the table maps one back to the other by ID.
type Route struct {
	view filter.Route
	vh   *VirtualHost

	pathKind    uint8 // pathPrefix, pathExact, pathRegex, pathSeparated
	path        string
	pathRe      *regexp.Regexp
	ignoreCase  bool
	headers     []strmatch.Header
	query       []queryMatcher
	grpcOnly    bool
	Kind        ActionKind
	Cluster     string
	Weighted    []WeightedCluster
	totalWeight uint32

	PrefixRewrite string
	HostRewrite   string
	AutoHost      bool
	// Timeout is the whole-request timeout; 0 disables it.
	Timeout        time.Duration
	MaxGRPCTimeout time.Duration
	useGRPCTimeout bool
	Retry          *RetryPolicy
	Hash           []HashPolicy
	// own is the route's own header mutations; ops joins them with its
	// virtual host's and route configuration's in the order they apply.
	own, ops headerOps
	Redirect *Redirect
	Direct   *Direct
	Upgrades map[string]bool // enabled upgrade types ("websocket")
}

// WeightedCluster is one target of a weighted route.
type WeightedCluster struct {
	Name   string
	Weight uint32
	// own is this target's header mutations; ops joins them with its
	// route's (Route.ops) in the order they apply.
	own, ops headerOps
}

// HashPolicy computes a consistent-hash key from the request.
type HashPolicy struct {
	Header   string
	SourceIP bool
	Terminal bool
}

// Redirect is a compiled redirect action.
type Redirect struct {
	Scheme, Host, Path, PrefixRewrite string
	Port                              uint32
	Code                              int
	StripQuery                        bool
}

// Direct is a compiled direct response.
type Direct struct {
	Status int
	Body   string
}

const (
	pathPrefix uint8 = iota
	pathExact
	pathRegex
	pathSeparated
)

// Name is the route's name (may be empty).
func (r *Route) Name() string { return r.view.Name }

// FilterOverride returns the filter replacing the listener filter at chain
// index i on this route (the route's per-filter config, else its virtual
// host's), or nil.
func (r *Route) FilterOverride(i int) filter.Filter { return r.view.FilterOverride(i) }

// Chain returns what the filter chain sees of the route.
func (r *Route) Chain() *filter.Route { return &r.view }

// route returns the compiled route behind a filter.Route this table handed
// out, or nil (none matched, or the route is not this table's).
func (t *Table) route(v *filter.Route) *Route {
	if v == nil || v.ID < 0 || v.ID >= len(t.routes) {
		return nil
	}
	if r := t.routes[v.ID]; &r.view == v {
		return r
	}
	return nil
}

// VirtualHost returns the virtual host the route belongs to.
func (r *Route) VirtualHost() *VirtualHost { return r.vh }

// PickCluster returns the route's target cluster, drawing a weighted choice
// when the route splits traffic.
func (r *Route) PickCluster() (string, *WeightedCluster) {
	if len(r.Weighted) == 0 {
		return r.Cluster, nil
	}
	n := rand.Uint32N(r.totalWeight)
	for i := range r.Weighted {
		if n < r.Weighted[i].Weight {
			return r.Weighted[i].Name, &r.Weighted[i]
		}
		n -= r.Weighted[i].Weight
	}
	w := &r.Weighted[len(r.Weighted)-1]
	return w.Name, w
}

// FilterBuilder compiles per-route filter overrides (typed_per_filter_config)
// into replacement filters for chain index i. The connection manager provides
// it; a nil builder rejects any per-filter config.
type FilterBuilder func(filterName string, cfg *anypb.Any) (index int, f filter.Filter, err error)

// Compile builds a Table. clusterExists, when non-nil, rejects routes to
// unknown clusters (static mode validates references; xDS may deliver
// clusters later, so it passes nil).
func Compile(rc *routev3.RouteConfiguration, fb FilterBuilder) (*Table, error) {
	t := &Table{Name: rc.GetName(), exact: map[string]*VirtualHost{}}
	var err error
	if t.headers, err = compileHeaderOps(rc.GetRequestHeadersToAdd(), rc.GetRequestHeadersToRemove(),
		rc.GetResponseHeadersToAdd(), rc.GetResponseHeadersToRemove()); err != nil {
		return nil, fmt.Errorf("route_config %q: %w", rc.GetName(), err)
	}
	for i, v := range rc.GetVirtualHosts() {
		vh, err := compileVirtualHost(v, fb)
		if err != nil {
			return nil, fmt.Errorf("route_config %q: virtual_hosts[%d] %q: %w", rc.GetName(), i, v.GetName(), err)
		}
		for _, r := range vh.routes {
			r.view.ID = len(t.routes)
			t.routes = append(t.routes, r)
			r.joinHeaderOps(t.headers)
		}
		for _, d := range v.GetDomains() {
			d = strings.ToLower(d)
			switch {
			case d == "*":
				if t.any != nil {
					return nil, fmt.Errorf("route_config %q: domain \"*\" used by two virtual hosts", rc.GetName())
				}
				t.any = vh
			case strings.HasPrefix(d, "*"):
				t.suffixes = append(t.suffixes, wildcard{part: d[1:], vh: vh})
			case strings.HasSuffix(d, "*"):
				t.prefixes = append(t.prefixes, wildcard{part: d[:len(d)-1], vh: vh})
			default:
				if _, dup := t.exact[d]; dup {
					return nil, fmt.Errorf("route_config %q: domain %q used by two virtual hosts", rc.GetName(), d)
				}
				t.exact[d] = vh
			}
		}
	}
	sort.SliceStable(t.suffixes, func(i, j int) bool { return len(t.suffixes[i].part) > len(t.suffixes[j].part) })
	sort.SliceStable(t.prefixes, func(i, j int) bool { return len(t.prefixes[i].part) > len(t.prefixes[j].part) })
	return t, nil
}

func compileVirtualHost(v *routev3.VirtualHost, fb FilterBuilder) (*VirtualHost, error) {
	vh := &VirtualHost{Name: v.GetName()}
	var err error
	if vh.headers, err = compileHeaderOps(v.GetRequestHeadersToAdd(), v.GetRequestHeadersToRemove(),
		v.GetResponseHeadersToAdd(), v.GetResponseHeadersToRemove()); err != nil {
		return nil, err
	}
	if v.GetRetryPolicy() != nil {
		if vh.retry, err = compileRetry(v.GetRetryPolicy()); err != nil {
			return nil, err
		}
	}
	if vh.override, err = compileOverrides(v.GetTypedPerFilterConfig(), fb); err != nil {
		return nil, err
	}
	for i, r := range v.GetRoutes() {
		cr, err := compileRoute(r, vh, fb)
		if err != nil {
			name := r.GetName()
			if name != "" {
				name = " " + fmt.Sprintf("%q", name)
			}
			return nil, fmt.Errorf("routes[%d]%s: %w", i, name, err)
		}
		vh.routes = append(vh.routes, cr)
	}
	return vh, nil
}

func compileRoute(r *routev3.Route, vh *VirtualHost, fb FilterBuilder) (*Route, error) {
	cr := &Route{view: filter.Route{Name: r.GetName(), Metadata: r.GetMetadata()}, vh: vh, Timeout: 15 * time.Second}
	m := r.GetMatch()
	if m == nil {
		return nil, fmt.Errorf("match is required")
	}
	cr.ignoreCase = m.GetCaseSensitive() != nil && !m.GetCaseSensitive().GetValue()
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		cr.pathKind, cr.path = pathPrefix, p.Prefix
	case *routev3.RouteMatch_Path:
		cr.pathKind, cr.path = pathExact, p.Path
	case *routev3.RouteMatch_SafeRegex:
		re, err := strmatch.CompileRegex(p.SafeRegex)
		if err != nil {
			return nil, fmt.Errorf("match.safe_regex: %w", err)
		}
		cr.pathKind, cr.pathRe = pathRegex, re
	case *routev3.RouteMatch_PathSeparatedPrefix:
		cr.pathKind, cr.path = pathSeparated, p.PathSeparatedPrefix
	default:
		return nil, fmt.Errorf("match: unsupported path specifier %T", p)
	}
	if cr.ignoreCase {
		cr.path = strings.ToLower(cr.path)
	}
	for i, h := range m.GetHeaders() {
		hm, err := strmatch.CompileRequestHeader(h)
		if err != nil {
			return nil, fmt.Errorf("match.headers[%d]: %w", i, err)
		}
		cr.headers = append(cr.headers, hm)
	}
	for i, q := range m.GetQueryParameters() {
		qm, err := compileQueryMatcher(q)
		if err != nil {
			return nil, fmt.Errorf("match.query_parameters[%d]: %w", i, err)
		}
		cr.query = append(cr.query, qm)
	}
	cr.grpcOnly = m.GetGrpc() != nil
	var err error
	if cr.own, err = compileHeaderOps(r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove(),
		r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove()); err != nil {
		return nil, err
	}
	own, err := compileOverrides(r.GetTypedPerFilterConfig(), fb)
	if err != nil {
		return nil, err
	}
	cr.view.Overrides = mergeOverrides(own, vh.override)
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		if err := compileRouteAction(cr, a.Route); err != nil {
			return nil, fmt.Errorf("route: %w", err)
		}
	case *routev3.Route_Redirect:
		cr.Kind = ActionRedirect
		cr.Redirect = compileRedirect(a.Redirect)
	case *routev3.Route_DirectResponse:
		cr.Kind = ActionDirect
		cr.Direct = &Direct{Status: int(a.DirectResponse.GetStatus())}
		if b := a.DirectResponse.GetBody(); b != nil {
			switch s := b.GetSpecifier().(type) {
			case *corev3.DataSource_InlineString:
				cr.Direct.Body = s.InlineString
			case *corev3.DataSource_InlineBytes:
				cr.Direct.Body = string(s.InlineBytes)
			default:
				return nil, fmt.Errorf("direct_response.body: only inline bodies are supported")
			}
		}
		if cr.Direct.Status < 100 || cr.Direct.Status > 599 {
			return nil, fmt.Errorf("direct_response.status %d out of range", cr.Direct.Status)
		}
	default:
		return nil, fmt.Errorf("unsupported action %T", a)
	}
	if cr.Retry == nil && vh.retry != nil {
		cr.Retry = vh.retry
	}
	return cr, nil
}

func compileRouteAction(cr *Route, a *routev3.RouteAction) error {
	cr.Kind = ActionCluster
	switch c := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		cr.Cluster = c.Cluster
	case *routev3.RouteAction_WeightedClusters:
		for i, w := range c.WeightedClusters.GetClusters() {
			wt := w.GetWeight().GetValue()
			if wt == 0 {
				continue
			}
			ops, err := compileHeaderOps(w.GetRequestHeadersToAdd(), w.GetRequestHeadersToRemove(),
				w.GetResponseHeadersToAdd(), w.GetResponseHeadersToRemove())
			if err != nil {
				return fmt.Errorf("weighted_clusters.clusters[%d]: %w", i, err)
			}
			cr.Weighted = append(cr.Weighted, WeightedCluster{Name: w.GetName(), Weight: wt, own: ops})
			cr.totalWeight += wt
		}
		if cr.totalWeight == 0 {
			return fmt.Errorf("weighted_clusters: total weight is 0")
		}
	default:
		return fmt.Errorf("unsupported cluster specifier %T", c)
	}
	cr.PrefixRewrite = a.GetPrefixRewrite()
	switch h := a.GetHostRewriteSpecifier().(type) {
	case *routev3.RouteAction_HostRewriteLiteral:
		cr.HostRewrite = h.HostRewriteLiteral
	case *routev3.RouteAction_AutoHostRewrite:
		cr.AutoHost = h.AutoHostRewrite.GetValue()
	}
	if a.Timeout != nil {
		cr.Timeout = a.GetTimeout().AsDuration()
	}
	if msd := a.GetMaxStreamDuration(); msd != nil && msd.GetGrpcTimeoutHeaderMax() != nil {
		cr.useGRPCTimeout = true
		cr.MaxGRPCTimeout = msd.GetGrpcTimeoutHeaderMax().AsDuration()
	}
	if a.GetMaxGrpcTimeout() != nil {
		cr.useGRPCTimeout = true
		cr.MaxGRPCTimeout = a.GetMaxGrpcTimeout().AsDuration()
	}
	if a.GetRetryPolicy() != nil {
		rp, err := compileRetry(a.GetRetryPolicy())
		if err != nil {
			return err
		}
		cr.Retry = rp
	}
	for i, h := range a.GetHashPolicy() {
		switch p := h.GetPolicySpecifier().(type) {
		case *routev3.RouteAction_HashPolicy_Header_:
			cr.Hash = append(cr.Hash, HashPolicy{Header: strings.ToLower(p.Header.GetHeaderName()), Terminal: h.GetTerminal()})
		case *routev3.RouteAction_HashPolicy_ConnectionProperties_:
			if !p.ConnectionProperties.GetSourceIp() {
				return fmt.Errorf("hash_policy[%d]: connection_properties without source_ip", i)
			}
			cr.Hash = append(cr.Hash, HashPolicy{SourceIP: true, Terminal: h.GetTerminal()})
		default:
			return fmt.Errorf("hash_policy[%d]: unsupported policy %T (header and connection_properties.source_ip are)", i, p)
		}
	}
	for _, u := range a.GetUpgradeConfigs() {
		if u.GetEnabled() == nil || u.GetEnabled().GetValue() {
			if cr.Upgrades == nil {
				cr.Upgrades = map[string]bool{}
			}
			cr.Upgrades[strings.ToLower(u.GetUpgradeType())] = true
		}
	}
	return nil
}

func compileRedirect(a *routev3.RedirectAction) *Redirect {
	r := &Redirect{Host: a.GetHostRedirect(), Port: a.GetPortRedirect(), StripQuery: a.GetStripQuery()}
	switch s := a.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			r.Scheme = "https"
		}
	case *routev3.RedirectAction_SchemeRedirect:
		r.Scheme = s.SchemeRedirect
	}
	switch p := a.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		r.Path = p.PathRedirect
	case *routev3.RedirectAction_PrefixRewrite:
		r.PrefixRewrite = p.PrefixRewrite
	}
	switch a.GetResponseCode() {
	case routev3.RedirectAction_MOVED_PERMANENTLY:
		r.Code = 301
	case routev3.RedirectAction_FOUND:
		r.Code = 302
	case routev3.RedirectAction_SEE_OTHER:
		r.Code = 303
	case routev3.RedirectAction_TEMPORARY_REDIRECT:
		r.Code = 307
	case routev3.RedirectAction_PERMANENT_REDIRECT:
		r.Code = 308
	default:
		r.Code = 301
	}
	return r
}

// joinHeaderOps merges the four levels of header mutations (route
// configuration, virtual host, route, weighted cluster) once, at compile
// time, into one list per route and per weighted cluster. Request
// mutations apply outermost first (route configuration, virtual host,
// route, weighted cluster), response mutations innermost first, so that on
// the request the most specific level's overwrite wins and on the response
// the route configuration's does (the order the router applied the levels
// in one by one before).
func (r *Route) joinHeaderOps(table headerOps) {
	r.ops.req = headerops.Concat(headerops.Concat(table.req, r.vh.headers.req), r.own.req)
	r.ops.resp = headerops.Concat(headerops.Concat(r.own.resp, r.vh.headers.resp), table.resp)
	for i := range r.Weighted {
		w := &r.Weighted[i]
		w.ops.req = headerops.Concat(r.ops.req, w.own.req)
		w.ops.resp = headerops.Concat(w.own.resp, r.ops.resp)
	}
}

// mergeOverrides joins a route's per-filter replacements with its virtual
// host's once, at compile time: the route's entry wins where both have one.
func mergeOverrides(route, vhost []filter.Filter) []filter.Filter {
	if len(route) == 0 {
		return vhost
	}
	if len(vhost) == 0 {
		return route
	}
	out := make([]filter.Filter, max(len(route), len(vhost)))
	copy(out, vhost)
	for i, f := range route {
		if f != nil {
			out[i] = f
		}
	}
	return out
}

// Match returns the route for req, or nil. It does not allocate.
func (t *Table) Match(req *message.Request) *Route {
	vh := t.virtualHost(req.Authority, req.Host())
	if vh == nil {
		return nil
	}
	path := req.PathOnly()
	isGRPC := false
	for _, r := range vh.routes {
		if !r.matchPath(path) {
			continue
		}
		if r.grpcOnly {
			ct, _ := req.Header.Get("content-type")
			if !isGRPC && !message.IsGRPC(ct) {
				continue
			}
			isGRPC = true
		}
		ok := true
		for i := range r.headers {
			if !r.headers[i].MatchRequest(req) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		if len(r.query) > 0 {
			q := req.Query()
			for i := range r.query {
				if !r.query[i].match(q) {
					ok = false
					break
				}
			}
			if !ok {
				continue
			}
		}
		return r
	}
	return nil
}

// virtualHost picks the virtual host for a request. A domain may name a port
// ("shop.example.com:8080"), so the whole authority is tried as an exact
// domain first; then the host without its port is matched exactly, then
// against the wildcards.
func (t *Table) virtualHost(authority, host []byte) *VirtualHost {
	var buf [256]byte
	if len(authority) > len(buf) {
		return t.any
	}
	lh := buf[:len(authority)]
	for i, c := range authority {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lh[i] = c
	}
	if vh, ok := t.exact[string(lh)]; ok {
		return vh
	}
	if len(host) < len(authority) {
		lh = lh[:len(host)] // Host() is a prefix of the authority
		if vh, ok := t.exact[string(lh)]; ok {
			return vh
		}
	}
	for i := range t.suffixes {
		s := t.suffixes[i].part
		if len(lh) > len(s) && string(lh[len(lh)-len(s):]) == s {
			return t.suffixes[i].vh
		}
	}
	for i := range t.prefixes {
		p := t.prefixes[i].part
		if len(lh) > len(p) && string(lh[:len(p)]) == p {
			return t.prefixes[i].vh
		}
	}
	return t.any
}

func (r *Route) matchPath(path []byte) bool {
	switch r.pathKind {
	case pathPrefix:
		if r.ignoreCase {
			return len(path) >= len(r.path) && message.EqualFold(path[:len(r.path)], r.path)
		}
		return len(path) >= len(r.path) && string(path[:len(r.path)]) == r.path
	case pathExact:
		if r.ignoreCase {
			return message.EqualFold(path, r.path)
		}
		return string(path) == r.path
	case pathRegex:
		return r.pathRe.Match(path)
	case pathSeparated:
		if len(path) < len(r.path) || string(path[:len(r.path)]) != r.path {
			return false
		}
		return len(path) == len(r.path) || path[len(r.path)] == '/'
	}
	return false
}
