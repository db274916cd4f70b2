package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"cel.dev/cel-go/cel"
	exprpb "google.golang.org/genproto/googleapis/api/expr/v1alpha1"
)

// JWT authenticates requests by bearer token (Envoy's jwt_authn filter).
type JWT struct {
	Providers []JWTProvider `yaml:"providers"`
	// Rules pick, by path, which providers a request needs; the first match
	// wins and a request no rule matches needs nothing. With one provider
	// and no rules, every request needs that provider's token.
	Rules []JWTRule `yaml:"rules"`
}

// JWTProvider is one token issuer.
type JWTProvider struct {
	Name      string   `yaml:"name"`
	Issuer    string   `yaml:"issuer"`
	Audiences []string `yaml:"audiences"`
	// JWKSURI is fetched by the proxy and cached (CacheDuration, default
	// 10m); JWKS is an inline key set (JSON). Exactly one is required.
	JWKSURI       string    `yaml:"jwks_uri"`
	JWKS          string    `yaml:"jwks"`
	CacheDuration *Duration `yaml:"cache_duration"`
	// JWKSCluster names the cluster Envoy fetches jwks_uri through
	// (http_uri.cluster); OmniRelay fetches the URL directly and ignores it.
	JWKSCluster string `yaml:"jwks_cluster"`
	// From lists where the token is looked for (default: Authorization
	// "Bearer " and the access_token query parameter).
	From *JWTFrom `yaml:"from"`
	// ClockSkew tolerated on exp and nbf (default 60s).
	ClockSkew *Duration `yaml:"clock_skew"`
	// RequireExpiration rejects tokens without exp.
	RequireExpiration bool `yaml:"require_expiration"`
	// Forward keeps the token header on the request sent upstream.
	Forward bool `yaml:"forward"`
	// ForwardClaims copies claims (dotted paths for nested ones) into
	// request headers: {claim: header}.
	ForwardClaims StringMap `yaml:"forward_claims"`
	// ForwardPayloadHeader carries the verified payload (base64url).
	ForwardPayloadHeader string `yaml:"forward_payload_header"`
}

// JWTFrom says where a provider's token is.
type JWTFrom struct {
	Header string `yaml:"header"`
	// Prefix before the token in Header, e.g. "Bearer ".
	Prefix string `yaml:"prefix"`
	Query  string `yaml:"query"`
	Cookie string `yaml:"cookie"`
}

// JWTRule is one path and what it requires; at most one of Requires, Any,
// All and AllowMissing is set (none: the path is public).
type JWTRule struct {
	PathPrefix string `yaml:"path_prefix"`
	Path       string `yaml:"path"`
	// Requires names one provider.
	Requires string `yaml:"requires"`
	// Any: a valid token from one of these providers.
	Any []string `yaml:"any"`
	// All: valid tokens from each of these providers.
	All []string `yaml:"all"`
	// AllowMissing lets requests without a token through; a token that is
	// present must be valid.
	AllowMissing bool `yaml:"allow_missing"`
}

// RBAC allows or denies requests by policy (Envoy's rbac filter). List two
// rbac filters, DENY first, to combine them: any denial ends the request.
type RBAC struct {
	// Action is ALLOW (a request must match some policy) or DENY (a request
	// matching a policy is refused).
	Action string `yaml:"action"`
	// Shadow evaluates and counts (rbac.shadow_allowed/denied) without
	// enforcing: a dry run before switching a policy on.
	Shadow   bool                  `yaml:"shadow"`
	Policies map[string]RBACPolicy `yaml:"policies"`
}

// RBACPolicy matches when one permission and one principal match and the
// condition, if any, is true. Empty permissions or principals match all.
type RBACPolicy struct {
	Permissions []RBACPermission `yaml:"permissions"`
	Principals  []RBACPrincipal  `yaml:"principals"`
	// Condition is a CEL expression over request, source, destination,
	// connection and metadata (Envoy's attributes), checked at load.
	Condition string `yaml:"condition"`
}

// RBACPermission is what is asked; every field set must match.
type RBACPermission struct {
	Any        bool            `yaml:"any"`
	PathPrefix string          `yaml:"path_prefix"`
	Path       string          `yaml:"path"`
	Methods    []string        `yaml:"methods"`
	Header     *RBACHeader     `yaml:"header"`
	Port       uint32          `yaml:"port"`
	Not        *RBACPermission `yaml:"not"`
}

// RBACPrincipal is who asks; every field set must match.
type RBACPrincipal struct {
	Any bool `yaml:"any"`
	// Peer is the mTLS peer's SPIFFE ID; PeerPrefix matches a trust domain
	// or namespace ("spiffe://mesh.local/ns/shop/").
	Peer       string   `yaml:"peer"`
	PeerPrefix string   `yaml:"peer_prefix"`
	SourceIP   []string `yaml:"source_ip"` // CIDRs, any of them: the direct peer
	// RemoteIP matches the trusted client address (the x-forwarded-for
	// entry the listener's trusted hops point at; the peer by default).
	RemoteIP []string       `yaml:"remote_ip"`
	Header   *RBACHeader    `yaml:"header"`
	JWT      *RBACJWTClaim  `yaml:"jwt"`
	Not      *RBACPrincipal `yaml:"not"`
}

// RBACHeader matches one request header: Exact, Prefix, Regex or Present.
type RBACHeader struct {
	Name    string `yaml:"name"`
	Exact   string `yaml:"exact"`
	Prefix  string `yaml:"prefix"`
	Regex   string `yaml:"regex"`
	Present bool   `yaml:"present"`
}

// RBACJWTClaim matches a claim of a token verified by a jwt filter earlier
// on the listener: Value (a string claim, or one element of a list claim)
// or Present.
type RBACJWTClaim struct {
	Provider string `yaml:"provider"`
	// Claim is a dotted path ("realm.roles").
	Claim   string `yaml:"claim"`
	Value   string `yaml:"value"`
	Present bool   `yaml:"present"`
}

// kind tells RBAC filters apart for the duplicate check: a listener may
// hold one of each action, enforced and shadow.
func (r *RBAC) kind() string {
	if r.Shadow {
		return "rbac " + r.Action + " shadow"
	}
	return "rbac " + r.Action
}

var providerNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func (v *validator) jwt(j *JWT, p string) {
	names := map[string]bool{}
	if len(j.Providers) == 0 {
		v.errf(p+".providers", "at least one provider is required")
	}
	for i, pr := range j.Providers {
		pp := idx(p+".providers", i)
		switch {
		case !providerNameRE.MatchString(pr.Name):
			v.errf(pp+".name", "name %q: want 1-63 of [A-Za-z0-9._-]", pr.Name)
		case names[pr.Name]:
			v.errf(pp+".name", "duplicate provider %q", pr.Name)
		}
		names[pr.Name] = true
		v.jwtProvider(&pr, pp)
	}
	if len(j.Rules) == 0 && len(j.Providers) > 1 {
		v.errf(p+".rules", "rules are required with several providers (say which paths need which)")
	}
	ref := func(rp, name string) {
		if !names[name] {
			v.errf(rp, "unknown provider %q", name)
		}
	}
	for i, r := range j.Rules {
		rp := idx(p+".rules", i)
		if (r.Path == "") == (r.PathPrefix == "") {
			v.errf(rp, "set exactly one of path and path_prefix")
		}
		for _, x := range []struct{ f, val string }{{"path", r.Path}, {"path_prefix", r.PathPrefix}} {
			if x.val != "" && !strings.HasPrefix(x.val, "/") {
				v.errf(rp+"."+x.f, "%q must start with /", x.val)
			}
		}
		set := 0
		if r.Requires != "" {
			set++
			ref(rp+".requires", r.Requires)
		}
		for field, list := range map[string][]string{"any": r.Any, "all": r.All} {
			if list == nil {
				continue
			}
			set++
			if len(list) == 0 {
				v.errf(rp+"."+field, "names at least one provider")
			}
			for k, n := range list {
				ref(idx(rp+"."+field, k), n)
			}
		}
		if r.AllowMissing {
			set++
		}
		if set > 1 {
			v.errf(rp, "set at most one of requires, any, all and allow_missing")
		}
	}
}

func (v *validator) jwtProvider(pr *JWTProvider, p string) {
	switch {
	case (pr.JWKSURI == "") == (pr.JWKS == ""):
		v.errf(p, "set exactly one of jwks_uri and jwks")
	case pr.JWKSURI != "":
		u, err := url.Parse(pr.JWKSURI)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			v.errf(p+".jwks_uri", "%q is not an http(s) URL", pr.JWKSURI)
		}
	default:
		var doc struct {
			Keys []json.RawMessage `json:"keys"`
		}
		if err := json.Unmarshal([]byte(pr.JWKS), &doc); err != nil || len(doc.Keys) == 0 {
			v.errf(p+".jwks", "not a JSON Web Key Set with keys")
		}
	}
	if pr.JWKS != "" && (pr.CacheDuration != nil || pr.JWKSCluster != "") {
		v.errf(p, "cache_duration and jwks_cluster apply to jwks_uri only")
	}
	v.positive(p+".cache_duration", pr.CacheDuration)
	if pr.ClockSkew != nil && *pr.ClockSkew < 0 {
		v.errf(p+".clock_skew", "must not be negative")
	}
	if f := pr.From; f != nil {
		if f.Header == "" && f.Query == "" && f.Cookie == "" {
			v.errf(p+".from", "name a header, query or cookie")
		}
		if f.Header != "" {
			v.headerName(p+".from.header", f.Header)
		}
		if f.Prefix != "" && f.Header == "" {
			v.errf(p+".from.prefix", "prefix applies to header only")
		}
	}
	for _, kv := range pr.ForwardClaims {
		v.headerName(joinKey(p+".forward_claims", kv.Key), kv.Value)
	}
	if pr.ForwardPayloadHeader != "" {
		v.headerName(p+".forward_payload_header", pr.ForwardPayloadHeader)
	}
}

func (v *validator) rbac(r *RBAC, p string) {
	if r.Action != "ALLOW" && r.Action != "DENY" {
		v.errf(p+".action", "action %q: want ALLOW or DENY", r.Action)
	}
	names := make([]string, 0, len(r.Policies))
	for n := range r.Policies {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		pol := r.Policies[n]
		pp := joinKey(p+".policies", n)
		for i := range pol.Permissions {
			v.rbacPermission(&pol.Permissions[i], idx(pp+".permissions", i), 0)
		}
		for i := range pol.Principals {
			v.rbacPrincipal(&pol.Principals[i], idx(pp+".principals", i), 0)
		}
		if pol.Condition != "" {
			if _, err := CompileCondition(pol.Condition); err != nil {
				v.errf(pp+".condition", "policy %q: %v", n, err)
			}
		}
	}
}

func (v *validator) rbacPermission(m *RBACPermission, p string, depth int) {
	if depth > 4 {
		v.errf(p, "nested too deeply")
		return
	}
	if !m.Any && m.PathPrefix == "" && m.Path == "" && len(m.Methods) == 0 && m.Header == nil && m.Port == 0 && m.Not == nil {
		v.errf(p, "empty permission (use any: true to match every request)")
	}
	if m.Path != "" && m.PathPrefix != "" {
		v.errf(p, "set path or path_prefix, not both")
	}
	for i, meth := range m.Methods {
		if !isToken(meth) || strings.ToUpper(meth) != meth {
			v.errf(idx(p+".methods", i), "method %q: want an upper-case HTTP method", meth)
		}
	}
	if m.Port > 65535 {
		v.errf(p+".port", "port %d is out of range", m.Port)
	}
	if m.Header != nil {
		v.rbacHeader(m.Header, p+".header")
	}
	if m.Not != nil {
		v.rbacPermission(m.Not, p+".not", depth+1)
	}
}

func (v *validator) rbacPrincipal(m *RBACPrincipal, p string, depth int) {
	if depth > 4 {
		v.errf(p, "nested too deeply")
		return
	}
	if !m.Any && m.Peer == "" && m.PeerPrefix == "" && len(m.SourceIP) == 0 && len(m.RemoteIP) == 0 && m.Header == nil && m.JWT == nil && m.Not == nil {
		v.errf(p, "empty principal (use any: true to match every caller)")
	}
	for _, x := range []struct{ f, val string }{{"peer", m.Peer}, {"peer_prefix", m.PeerPrefix}} {
		if x.val != "" && !strings.HasPrefix(x.val, "spiffe://") {
			v.errf(p+"."+x.f, "%q is not a SPIFFE ID (spiffe://...)", x.val)
		}
	}
	for i, c := range m.SourceIP {
		if _, err := ParseCIDR(c); err != nil {
			v.errf(idx(p+".source_ip", i), "%v", err)
		}
	}
	for i, c := range m.RemoteIP {
		if _, err := ParseCIDR(c); err != nil {
			v.errf(idx(p+".remote_ip", i), "%v", err)
		}
	}
	if m.Header != nil {
		v.rbacHeader(m.Header, p+".header")
	}
	if j := m.JWT; j != nil {
		if j.Provider == "" || j.Claim == "" {
			v.errf(p+".jwt", "provider and claim are required")
		}
		if (j.Value == "") == !j.Present {
			v.errf(p+".jwt", "set value or present: true")
		}
	}
	if m.Not != nil {
		v.rbacPrincipal(m.Not, p+".not", depth+1)
	}
}

func (v *validator) rbacHeader(h *RBACHeader, p string) {
	v.headerName(p+".name", h.Name)
	set := 0
	for _, s := range []string{h.Exact, h.Prefix, h.Regex} {
		if s != "" {
			set++
		}
	}
	if h.Present {
		set++
	}
	if set != 1 {
		v.errf(p, "set exactly one of exact, prefix, regex and present")
	}
	if h.Regex != "" {
		if _, err := regexp.Compile(h.Regex); err != nil {
			v.errf(p+".regex", "%v", err)
		}
	}
}

// ParseCIDR reads "10.0.0.0/8" or a bare address (a /32 or /128).
func ParseCIDR(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("CIDR %q: %w", s, err)
		}
		return pfx, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("address %q: %w", s, err)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// CompileCondition parses and type-checks a policy's CEL condition and
// returns it as the parsed Expr an xDS RBAC Policy carries. The declared
// variables are the ones the data plane binds (rbac.CELVariables): each a
// map(string, dyn).
func CompileCondition(src string) (*exprpb.Expr, error) {
	var opts []cel.EnvOption
	for _, name := range []string{"request", "source", "destination", "connection", "metadata"} {
		opts = append(opts, cel.Variable(name, cel.MapType(cel.StringType, cel.DynType)))
	}
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, fmt.Errorf("cel env: %w", err)
	}
	ast, iss := env.Compile(src)
	if iss != nil && iss.Err() != nil {
		return nil, errors.New(strings.ReplaceAll(strings.TrimSpace(iss.Err().Error()), "\n", " "))
	}
	if t := ast.OutputType(); !t.IsExactType(cel.BoolType) && !t.IsExactType(cel.DynType) {
		return nil, fmt.Errorf("condition yields %s, want bool", t)
	}
	pe, err := cel.AstToParsedExpr(ast)
	if err != nil {
		return nil, fmt.Errorf("condition: %w", err)
	}
	return pe.GetExpr(), nil
}

// connectionRBAC checks L4 policies: only connection facts exist there, so
// request-level matchers (paths, methods, headers, JWT claims) are refused
// rather than left never to match.
func (v *validator) connectionRBAC(rs []RBAC, p string) {
	seen := map[string]int{}
	for i := range rs {
		r := &rs[i]
		rp := idx(p, i)
		v.rbac(r, rp)
		if j, dup := seen[r.kind()]; dup {
			v.errf(rp, "%s is listed twice (also %s)", r.kind(), idx(p, j))
		}
		seen[r.kind()] = i
		names := make([]string, 0, len(r.Policies))
		for n := range r.Policies {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			pol := r.Policies[n]
			pp := joinKey(rp+".policies", n)
			for k := range pol.Permissions {
				v.l4Permission(&pol.Permissions[k], idx(pp+".permissions", k))
			}
			for k := range pol.Principals {
				v.l4Principal(&pol.Principals[k], idx(pp+".principals", k))
			}
		}
	}
}

func (v *validator) l4Permission(m *RBACPermission, p string) {
	if m.PathPrefix != "" || m.Path != "" || len(m.Methods) > 0 || m.Header != nil {
		v.errf(p, "connection policies see no HTTP request: use any, port or not")
	}
	if m.Not != nil {
		v.l4Permission(m.Not, p+".not")
	}
}

func (v *validator) l4Principal(m *RBACPrincipal, p string) {
	if m.Header != nil || m.JWT != nil {
		v.errf(p, "connection policies see no HTTP request: use peer, peer_prefix, source_ip or not")
	}
	if m.Not != nil {
		v.l4Principal(m.Not, p+".not")
	}
}
