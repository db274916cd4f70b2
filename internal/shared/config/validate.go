package config

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// validator collects every problem it finds; one bad field should not hide
// the next.
type validator struct {
	c        *Config
	src      *source
	errs     []*Error
	clusters map[string]bool
}

func (v *validator) errf(path, format string, args ...any) {
	v.errs = append(v.errs, v.src.errorAt(path, fmt.Sprintf(format, args...)))
}

func idx(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// Validate checks the whole config: names, addresses, protocols, references
// between listeners and clusters, value ranges, regexes, and (unless parsed
// with SkipFileChecks) that certificate files load. It reports every problem
// as an *Error, joined, ordered by position in the file.
func (c *Config) Validate() error {
	v := &validator{c: c, src: c.src, clusters: map[string]bool{}}
	if c.Version != "" && c.Version != Version {
		v.errf("version", "unsupported version %q (want %s)", c.Version, Version)
	}
	// Clusters first: listeners refer to them.
	v.clusterNames()
	bound := v.listeners()
	v.admin(bound)
	v.telemetry(c.Telemetry)
	for i := range c.Clusters {
		v.cluster(&c.Clusters[i], idx("clusters", i))
	}
	return joinErrors(v.errs)
}

func (v *validator) clusterNames() {
	first := map[string]int{}
	for i, cl := range v.c.Clusters {
		p := idx("clusters", i) + ".name"
		switch j, dup := first[cl.Name]; {
		case cl.Name == "":
			v.errf(p, "name is required")
		case dup:
			v.errf(p, "duplicate cluster name %q (also clusters[%d])", cl.Name, j)
		default:
			first[cl.Name] = i
			v.clusters[cl.Name] = true
		}
	}
}

func (v *validator) clusterRef(path, name string) {
	switch {
	case name == "":
		v.errf(path, "cluster name is empty")
	case !v.clusters[name]:
		v.errf(path, "unknown cluster %q", name)
	}
}

type boundAddr struct {
	addr netip.AddrPort
	name string
}

func (v *validator) admin(bound []boundAddr) {
	addr := v.c.Admin.EffectiveAddress()
	ap, err := checkListenAddress(addr)
	if err != nil {
		v.errf("admin.address", "invalid address %q: %v", addr, err)
		return
	}
	for _, b := range bound {
		if overlaps(ap, b.addr) {
			v.errf("admin.address", "address %s is also used by listener %q", addr, b.name)
		}
	}
}

func (v *validator) listeners() []boundAddr {
	var bound []boundAddr
	names := map[string]int{}
	for i := range v.c.Listeners {
		l := &v.c.Listeners[i]
		p := idx("listeners", i)
		switch j, dup := names[l.Name]; {
		case l.Name == "":
			v.errf(p+".name", "name is required")
		case dup:
			v.errf(p+".name", "duplicate listener name %q (also listeners[%d])", l.Name, j)
		default:
			names[l.Name] = i
		}
		if l.Address == "" {
			v.errf(p+".address", "address is required")
		} else if ap, err := checkListenAddress(l.Address); err != nil {
			v.errf(p+".address", "invalid address %q: %v", l.Address, err)
		} else {
			for _, b := range bound {
				if overlaps(ap, b.addr) {
					v.errf(p+".address", "address %s is already used by listener %q", l.Address, b.name)
					break
				}
			}
			bound = append(bound, boundAddr{ap, l.Name})
		}
		v.listener(l, p)
	}
	return bound
}

func (v *validator) listener(l *Listener, p string) {
	proto := l.EffectiveProtocol()
	isHTTP := proto == ProtocolHTTP || proto == ProtocolHTTPS
	switch proto {
	case ProtocolHTTP, ProtocolHTTPS, ProtocolTCP, ProtocolTLS:
	default:
		v.errf(p+".protocol", "unknown protocol %q (want http, https, tcp or tls)", l.Protocol)
		return
	}
	notAllowed := func(field string, set bool, hint string) {
		if set {
			v.errf(p+"."+field, "not allowed on %s listener%s", article(proto), hint)
		}
	}
	if isHTTP {
		if len(l.VirtualHosts) == 0 {
			v.errf(p+".virtual_hosts", "%s listener needs at least one virtual host", article(proto))
		}
		notAllowed("cluster", l.Cluster != "", " (route to clusters from virtual_hosts)")
		notAllowed("weighted_clusters", len(l.WeightedClusters) > 0, " (route to clusters from virtual_hosts)")
		notAllowed("sni_routes", len(l.SNIRoutes) > 0, " (sni_routes belong to protocol: tls)")
		v.virtualHosts(l, p)
		v.filters(l.Filters, p+".filters")
		if l.MaxRequestHeadersKB > 8192 {
			v.errf(p+".max_request_headers_kb", "must be at most 8192")
		}
		switch l.PathWithEscapedSlashes {
		case "", "keep", "reject", "unescape_and_redirect", "unescape_and_forward":
		default:
			v.errf(p+".path_with_escaped_slashes", "%q is not one of keep, reject, unescape_and_redirect, unescape_and_forward", l.PathWithEscapedSlashes)
		}
	} else {
		notAllowed("virtual_hosts", len(l.VirtualHosts) > 0, "")
		v.networkFilters(l.Filters, proto, p+".filters") // extensions only (netext.go)
		notAllowed("max_request_headers_kb", l.MaxRequestHeadersKB != 0, "")
		notAllowed("stream_idle_timeout", l.StreamIdleTimeout != nil, "")
		notAllowed("request_timeout", l.RequestTimeout != nil, "")
		notAllowed("xff_num_trusted_hops", l.XFFNumTrustedHops != 0, "")
		notAllowed("normalize_path", l.NormalizePath != nil, "")
		notAllowed("merge_slashes", l.MergeSlashes != nil, "")
		notAllowed("path_with_escaped_slashes", l.PathWithEscapedSlashes != "", "")
		notAllowed("use_remote_address", l.UseRemoteAddress != nil, "")
		notAllowed("skip_xff_append", l.SkipXFFAppend, "")
		notAllowed("generate_request_id", l.GenerateRequestID != nil, "")
		notAllowed("preserve_external_request_id", l.PreserveExternalRequestID, "")
	}
	switch proto {
	case ProtocolHTTPS:
		if l.TLS == nil {
			v.errf(p+".tls", "an https listener needs tls.certificates")
		} else {
			v.listenerTLS(l.TLS, p+".tls")
		}
	case ProtocolHTTP:
		notAllowed("tls", l.TLS != nil, " (use protocol: https to terminate TLS)")
	case ProtocolTCP:
		notAllowed("tls", l.TLS != nil, " (use protocol: tls for SNI passthrough)")
		notAllowed("sni_routes", len(l.SNIRoutes) > 0, " (sni_routes belong to protocol: tls)")
		if l.Cluster == "" && len(l.WeightedClusters) == 0 {
			v.errf(p+".cluster", "a tcp listener needs cluster or weighted_clusters")
		}
		v.upstream(p, l.Cluster, l.WeightedClusters)
	case ProtocolTLS:
		notAllowed("tls", l.TLS != nil, " (tls listeners pass TLS through by SNI; use protocol: https to terminate it)")
		if l.Cluster == "" && len(l.WeightedClusters) == 0 && len(l.SNIRoutes) == 0 {
			v.errf(p+".sni_routes", "a tls listener needs sni_routes, or a default cluster")
		}
		v.upstream(p, l.Cluster, l.WeightedClusters)
		v.sniRoutes(l.SNIRoutes, p+".sni_routes")
	}
	if l.AccessLog != nil && strings.TrimSpace(l.AccessLog.Path) == "" {
		v.errf(p+".access_log.path", "path is required (stdout, stderr or a file path)")
	}
	v.connectionRBAC(l.ConnectionRBAC, p+".connection_rbac")
	v.listenerMTLS(l, p+".mtls")
}

// upstream checks a cluster-or-weighted_clusters pair of fields.
func (v *validator) upstream(p, cluster string, weighted []WeightedCluster) {
	if cluster != "" && len(weighted) > 0 {
		v.errf(p+".weighted_clusters", "use cluster or weighted_clusters, not both")
		return
	}
	if cluster != "" {
		v.clusterRef(p+".cluster", cluster)
	}
	if len(weighted) > 0 {
		v.weighted(weighted, p+".weighted_clusters")
	}
}

func (v *validator) weighted(ws []WeightedCluster, p string) {
	var total uint64
	seen := map[string]int{}
	for i, w := range ws {
		wp := idx(p, i)
		v.clusterRef(wp+".cluster", w.Cluster)
		if j, dup := seen[w.Cluster]; dup && w.Cluster != "" {
			v.errf(wp+".cluster", "cluster %q is listed twice (also %s)", w.Cluster, idx(p, j))
		}
		seen[w.Cluster] = i
		if w.Weight == 0 {
			v.errf(wp+".weight", "weight must be greater than 0")
		}
		total += uint64(w.Weight)
	}
	if total > 1<<32-1 {
		v.errf(p, "weights add up to %d, more than 4294967295", total)
	}
}

func (v *validator) sniRoutes(rs []SNIRoute, p string) {
	seen := map[string]string{}
	for i, r := range rs {
		rp := idx(p, i)
		if len(r.SNI) == 0 {
			v.errf(rp+".sni", "at least one server name is required")
		}
		v.serverNames(r.SNI, rp+".sni", seen)
		v.clusterRef(rp+".cluster", r.Cluster)
	}
}

// serverNames checks SNI names: host names, optionally with a leading "*."
// wildcard, each used once per listener (seen maps name to first path).
func (v *validator) serverNames(names []string, p string, seen map[string]string) {
	for i, n := range names {
		np := idx(p, i)
		base := strings.TrimPrefix(n, "*.")
		if n == "" || !isDNSName(base) || strings.Contains(base, "*") {
			v.errf(np, "invalid server name %q (a host name, optionally starting with *.)", n)
			continue
		}
		key := strings.ToLower(n)
		if first, dup := seen[key]; dup {
			v.errf(np, "server name %q is already used by %s", n, first)
			continue
		}
		seen[key] = np
	}
}

func (v *validator) listenerTLS(t *ListenerTLS, p string) {
	switch t.MinVersion {
	case "", "1.2", "1.3":
	default:
		v.errf(p+".min_version", "unsupported TLS version %q (want \"1.2\" or \"1.3\")", t.MinVersion)
	}
	if len(t.Certificates) == 0 {
		v.errf(p+".certificates", "at least one certificate is required")
	}
	switch t.OCSPStaplePolicy {
	case "", "lenient", "strict", "must_staple":
	default:
		v.errf(p+".ocsp_staple_policy", "unknown policy %q (want lenient, strict or must_staple)", t.OCSPStaplePolicy)
	}
	seen := map[string]string{}
	defaults := 0
	for i, c := range t.Certificates {
		cp := idx(p+".certificates", i)
		if len(c.SNI) == 0 {
			defaults++
			if defaults > 1 {
				v.errf(cp+".sni", "only one certificate may leave out sni (it is the default)")
			}
		}
		v.serverNames(c.SNI, cp+".sni", seen)
		v.keyPair(cp, c.CertFile, c.KeyFile, true)
		switch {
		case c.OCSPStaple == "" && t.OCSPStaplePolicy == "must_staple":
			v.errf(cp+".ocsp_staple", "ocsp_staple_policy must_staple needs an OCSP staple for every certificate")
		case c.OCSPStaple != "" && !v.src.skipFiles():
			if _, err := os.Stat(v.c.FilePath(c.OCSPStaple)); err != nil {
				v.errf(cp+".ocsp_staple", "cannot read the OCSP staple: %v", err)
			}
		}
	}
}

func (v *validator) virtualHosts(l *Listener, p string) {
	names := map[string]int{}
	domains := map[string]string{}
	for i := range l.VirtualHosts {
		vh := &l.VirtualHosts[i]
		vp := idx(p+".virtual_hosts", i)
		v.metadata(vh.Metadata, vp+".metadata")
		switch j, dup := names[vh.Name]; {
		case vh.Name == "":
			v.errf(vp+".name", "name is required")
		case dup:
			v.errf(vp+".name", "duplicate virtual host name %q (also virtual_hosts[%d])", vh.Name, j)
		default:
			names[vh.Name] = i
		}
		for k, d := range vh.EffectiveDomains() {
			dp := idx(vp+".domains", k)
			if len(vh.Domains) == 0 {
				dp = vp
			}
			if err := checkDomain(d); err != nil {
				v.errf(dp, "%v", err)
				continue
			}
			key := strings.ToLower(d)
			if first, dup := domains[key]; dup {
				v.errf(dp, "domain %q is already used by %s", d, first)
				continue
			}
			domains[key] = fmt.Sprintf("virtual host %q", vh.Name)
		}
		if len(vh.Routes) == 0 {
			v.errf(vp+".routes", "a virtual host needs at least one route")
		}
		for k := range vh.Routes {
			v.route(&vh.Routes[k], idx(vp+".routes", k))
		}
	}
}

// checkDomain accepts what Envoy accepts: "*", or a host (with optional
// port) with at most one wildcard, at its start or its end.
func checkDomain(d string) error {
	if d == "*" {
		return nil
	}
	if d == "" {
		return fmt.Errorf("domain is empty")
	}
	if strings.ContainsAny(d, " \t\r\n\x00/\\\"") {
		return fmt.Errorf("invalid domain %q", d)
	}
	inner := strings.TrimSuffix(strings.TrimPrefix(d, "*"), "*")
	if strings.Contains(inner, "*") || (strings.HasPrefix(d, "*") && strings.HasSuffix(d, "*")) {
		return fmt.Errorf("invalid domain %q: one wildcard is allowed, at the start or the end", d)
	}
	return nil
}

var retryConditions = []string{
	"5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx", "refused-stream",
	"retriable-status-codes", "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
}

func (v *validator) route(r *Route, p string) {
	v.metadata(r.Metadata, p+".metadata")
	v.routeMatch(&r.Match, p+".match")
	if r.Tracing != nil {
		v.ratio(p+".tracing.sampling_ratio", r.Tracing.SamplingRatio)
	}

	actions := 0
	for _, set := range []bool{r.Cluster != "", len(r.WeightedClusters) > 0, r.Redirect != nil, r.DirectResponse != nil} {
		if set {
			actions++
		}
	}
	if actions != 1 {
		v.errf(p, "a route needs exactly one of cluster, weighted_clusters, redirect, direct_response (found %d)", actions)
	}
	forwards := r.Cluster != "" || len(r.WeightedClusters) > 0
	if r.Cluster != "" {
		v.clusterRef(p+".cluster", r.Cluster)
	}
	if len(r.WeightedClusters) > 0 {
		v.weighted(r.WeightedClusters, p+".weighted_clusters")
	}
	if r.Redirect != nil {
		v.redirect(r.Redirect, p+".redirect")
	}
	if d := r.DirectResponse; d != nil {
		if d.Status < 200 || d.Status > 599 {
			v.errf(p+".direct_response.status", "status %d is not in 200-599", d.Status)
		}
	}
	if !forwards && actions == 1 {
		for _, o := range []struct {
			field string
			set   bool
		}{
			{"prefix_rewrite", r.PrefixRewrite != ""}, {"host_rewrite", r.HostRewrite != ""},
			{"timeout", r.Timeout != nil}, {"retry", r.Retry != nil}, {"hash_policy", len(r.HashPolicy) > 0},
		} {
			if o.set {
				v.errf(p+"."+o.field, "only valid on a route to cluster or weighted_clusters")
			}
		}
	}
	if r.PrefixRewrite != "" && r.Match.Path == "" && r.Match.PathPrefix == "" && r.Match.PathRegex != "" {
		v.errf(p+".prefix_rewrite", "needs a path or path_prefix match")
	}
	if r.HostRewrite != "" && strings.ContainsAny(r.HostRewrite, " /\t\r\n\x00") {
		v.errf(p+".host_rewrite", "invalid host %q", r.HostRewrite)
	}
	v.headerValue(p+".prefix_rewrite", r.PrefixRewrite)
	if r.Retry != nil {
		v.retry(r.Retry, p+".retry")
	}
	for i, h := range r.HashPolicy {
		hp := idx(p+".hash_policy", i)
		switch {
		case h.Header != "" && h.SourceIP:
			v.errf(hp, "use header or source_ip, not both")
		case h.Header == "" && !h.SourceIP:
			v.errf(hp, "needs header or source_ip: true")
		case h.Header != "":
			v.headerName(hp+".header", h.Header)
		}
	}
	v.headerAdds(r.RequestHeadersAdd, p+".request_headers_add")
	v.headerAdds(r.ResponseHeadersAdd, p+".response_headers_add")
	v.headerRemoves(r.RequestHeadersRemove, p+".request_headers_remove")
	v.headerRemoves(r.ResponseHeadersRemove, p+".response_headers_remove")
	if r.LocalRateLimit != nil {
		v.localRateLimit(r.LocalRateLimit, p+".local_rate_limit")
	}
}

func (v *validator) routeMatch(m *RouteMatch, p string) {
	set := 0
	for _, s := range []string{m.Path, m.PathPrefix, m.PathRegex} {
		if s != "" {
			set++
		}
	}
	if set > 1 {
		v.errf(p, "use only one of path, path_prefix, path_regex")
	}
	if m.Path != "" && !strings.HasPrefix(m.Path, "/") {
		v.errf(p+".path", "path %q must start with /", m.Path)
	}
	if m.PathPrefix != "" && !strings.HasPrefix(m.PathPrefix, "/") {
		v.errf(p+".path_prefix", "path_prefix %q must start with /", m.PathPrefix)
	}
	if m.PathRegex != "" {
		v.regex(p+".path_regex", m.PathRegex)
	}
	for i, method := range m.Methods {
		if !isMethod(method) {
			v.errf(idx(p+".methods", i), "invalid method %q (methods are upper-case tokens such as GET)", method)
		}
	}
	for i, h := range m.Headers {
		hp := idx(p+".headers", i)
		if h.fromMap {
			hp = joinKey(p+".headers", h.Name)
		}
		v.headerMatcher(&h, hp)
	}
	for _, kv := range m.Query {
		if kv.Key == "" {
			v.errf(p+".query", "query parameter name is empty")
		}
	}
}

// article prefixes a protocol name with "a" or "an" as it is read aloud.
func article(p ListenerProtocol) string {
	if p == ProtocolHTTP || p == ProtocolHTTPS {
		return "an " + string(p)
	}
	return "a " + string(p)
}

func isMethod(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func (v *validator) headerMatcher(h *HeaderMatcher, p string) {
	namePath := p + ".name"
	if h.fromMap {
		namePath = p
	}
	if h.Name == "" {
		v.errf(namePath, "header name is required")
	} else {
		v.headerName(namePath, h.Name)
	}
	kinds := 0
	for _, set := range []bool{h.Exact != "", h.Prefix != "", h.Suffix != "", h.Contains != "", h.Regex != "", h.Present} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		v.errf(p, "a header matcher needs exactly one of exact, prefix, suffix, contains, regex, present: true (found %d)", kinds)
	}
	if h.Regex != "" {
		v.regex(p+".regex", h.Regex)
	}
}

func (v *validator) regex(p, re string) {
	if _, err := regexp.Compile(re); err != nil {
		v.errf(p, "invalid regex: %v", err)
	}
}

// headerName accepts RFC 9110 field names, which excludes pseudo-headers.
func (v *validator) headerName(p, name string) {
	if !isToken(name) {
		v.errf(p, "invalid header name %q", name)
	}
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

func (v *validator) headerAdds(m StringMap, p string) {
	for _, kv := range m {
		kp := joinKey(p, kv.Key)
		v.headerName(kp, kv.Key)
		if strings.EqualFold(kv.Key, "host") {
			v.errf(kp, "the host header cannot be set here (use host_rewrite)")
		}
		v.headerValue(kp, kv.Value)
	}
}

func (v *validator) headerRemoves(names []string, p string) {
	for i, n := range names {
		v.headerName(idx(p, i), n)
		if strings.EqualFold(n, "host") {
			v.errf(idx(p, i), "the host header cannot be removed")
		}
	}
}

func (v *validator) redirect(r *Redirect, p string) {
	switch r.Code {
	case 0, 301, 302, 303, 307, 308:
	default:
		v.errf(p+".code", "redirect code %d is not one of 301, 302, 303, 307, 308", r.Code)
	}
	if r.HTTPS && r.Scheme != "" {
		v.errf(p+".https", "use https or scheme, not both")
	}
	if r.Path != "" && r.PrefixRewrite != "" {
		v.errf(p+".prefix_rewrite", "use path or prefix_rewrite, not both")
	}
	if r.Path != "" && !strings.HasPrefix(r.Path, "/") {
		v.errf(p+".path", "path %q must start with /", r.Path)
	}
	v.headerValue(p+".host", r.Host)
	v.headerValue(p+".path", r.Path)
	v.headerValue(p+".prefix_rewrite", r.PrefixRewrite)
	if r.Scheme != "" && r.Scheme != "http" && r.Scheme != "https" {
		v.errf(p+".scheme", "scheme %q is not http or https", r.Scheme)
	}
	if !r.HTTPS && r.Scheme == "" && r.Host == "" && r.Path == "" && r.PrefixRewrite == "" {
		v.errf(p, "a redirect needs at least one of scheme, https, host, path, prefix_rewrite (it would loop)")
	}
}

func (v *validator) retry(r *Retry, p string) {
	if r.Attempts == 0 && v.src != nil {
		if _, set := v.src.pos[p+".attempts"]; set {
			v.errf(p+".attempts", "attempts counts every try, the first included; it must be at least 1")
		}
	}
	for i, on := range r.On {
		if !slices.Contains(retryConditions, on) {
			v.errf(idx(p+".on", i), "unknown retry condition %q (want one of %s)", on, strings.Join(retryConditions, ", "))
		}
	}
	for i, code := range r.RetriableStatusCodes {
		if code < 100 || code > 599 {
			v.errf(idx(p+".retriable_status_codes", i), "status %d is not in 100-599", code)
		}
	}
	v.positive(p+".per_try_timeout", r.PerTryTimeout)
	if b := r.Backoff; b != nil {
		if b.Base == nil {
			v.errf(p+".backoff.base", "base is required")
		}
		v.positive(p+".backoff.base", b.Base)
		v.positive(p+".backoff.max", b.Max)
		if b.Base != nil && b.Max != nil && *b.Max < *b.Base {
			v.errf(p+".backoff.max", "max (%v) is less than base (%v)", b.Max.Std(), b.Base.Std())
		}
	}
}

// headerValue checks text that ends up in a header or the request line:
// no line breaks or NUL, at most 16 KiB (Envoy's limit).
func (v *validator) headerValue(p, s string) {
	switch {
	case strings.ContainsAny(s, "\r\n\x00"):
		v.errf(p, "contains a line break or NUL")
	case len(s) > 16384:
		v.errf(p, "is longer than 16384 bytes")
	}
}

// positive checks that a duration, when set, is greater than zero.
func (v *validator) positive(p string, d *Duration) {
	if d != nil && *d <= 0 {
		v.errf(p, "must be greater than 0")
	}
}

func (v *validator) filters(fs []HTTPFilter, p string) {
	seen := map[string]int{}
	for i, f := range fs {
		fp := idx(p, i)
		var kinds []string
		if f.Headers != nil {
			kinds = append(kinds, "headers")
			v.headerAdds(f.Headers.RequestAdd, fp+".headers.request_add")
			v.headerAdds(f.Headers.ResponseAdd, fp+".headers.response_add")
			v.headerRemoves(f.Headers.RequestRemove, fp+".headers.request_remove")
			v.headerRemoves(f.Headers.ResponseRemove, fp+".headers.response_remove")
		}
		if f.LocalRateLimit != nil {
			kinds = append(kinds, "local_rate_limit")
			v.localRateLimit(f.LocalRateLimit, fp+".local_rate_limit")
		}
		if f.Fault != nil {
			kinds = append(kinds, "fault")
			v.fault(f.Fault, fp+".fault")
		}
		if f.CORS != nil {
			kinds = append(kinds, "cors")
			v.cors(f.CORS, fp+".cors")
		}
		if f.JWT != nil {
			kinds = append(kinds, "jwt")
			v.jwt(f.JWT, fp+".jwt")
		}
		if f.RBAC != nil {
			kinds = append(kinds, f.RBAC.kind()) // one ALLOW and one DENY may be combined
			v.rbac(f.RBAC, fp+".rbac")
		}
		if f.Extension != nil {
			kinds = append(kinds, "extension "+f.Extension.Name) // one entry per extension name
			v.extension(f.Extension, fp+".extension")
		}
		if len(kinds) != 1 {
			v.errf(fp, "a filter entry names exactly one filter (headers, local_rate_limit, fault or cors), found %d", len(kinds))
			continue
		}
		if j, dup := seen[kinds[0]]; dup {
			v.errf(fp, "filter %s is listed twice (also %s)", kinds[0], idx(p, j))
		}
		seen[kinds[0]] = i
	}
}

func (v *validator) localRateLimit(l *LocalRateLimit, p string) {
	if l.MaxTokens == 0 {
		v.errf(p+".max_tokens", "max_tokens must be at least 1")
	}
	if l.TokensPerFill > l.MaxTokens && l.MaxTokens > 0 {
		v.errf(p+".tokens_per_fill", "tokens_per_fill (%d) is more than max_tokens (%d)", l.TokensPerFill, l.MaxTokens)
	}
	v.positive(p+".fill_interval", l.FillInterval)
	if l.FillInterval != nil && *l.FillInterval > 0 && l.FillInterval.Std() < 50*time.Millisecond {
		v.errf(p+".fill_interval", "fill_interval must be at least 50ms")
	}
	if l.Status != 0 && !isStatusCode(l.Status) {
		v.errf(p+".status", "status %d is not a standard HTTP error status (4xx or 5xx)", l.Status)
	}
}

func (v *validator) percent(p string, pct *uint32) {
	if pct != nil && *pct > 100 {
		v.errf(p, "percent %d is more than 100", *pct)
	}
}

func (v *validator) fault(f *Fault, p string) {
	if f.Delay == nil && f.Abort == nil {
		v.errf(p, "a fault filter needs delay or abort")
	}
	if d := f.Delay; d != nil {
		if d.Fixed == nil {
			v.errf(p+".delay.fixed", "fixed is required")
		}
		v.positive(p+".delay.fixed", d.Fixed)
		v.percent(p+".delay.percent", d.Percent)
	}
	if a := f.Abort; a != nil {
		if a.Status < 200 || a.Status > 599 {
			v.errf(p+".abort.status", "status %d is not in 200-599", a.Status)
		}
		v.percent(p+".abort.percent", a.Percent)
	}
}

func (v *validator) cors(c *CORS, p string) {
	if len(c.AllowOrigins) == 0 {
		v.errf(p+".allow_origins", "at least one origin is required (\"*\" allows any)")
	}
	for i, o := range c.AllowOrigins {
		if o == "" || strings.ContainsAny(o, " \t\r\n") {
			v.errf(idx(p+".allow_origins", i), "invalid origin %q", o)
		}
		if o == "*" && c.AllowCredentials {
			v.errf(idx(p+".allow_origins", i), "\"*\" cannot be combined with allow_credentials (browsers reject it)")
		}
	}
	for i, m := range c.AllowMethods {
		if !isMethod(m) {
			v.errf(idx(p+".allow_methods", i), "invalid method %q", m)
		}
	}
	for i, n := range c.AllowHeaders {
		if n != "*" {
			v.headerName(idx(p+".allow_headers", i), n)
		}
	}
	for i, n := range c.ExposeHeaders {
		if n != "*" {
			v.headerName(idx(p+".expose_headers", i), n)
		}
	}
	v.positive(p+".max_age", c.MaxAge)
}

// isStatusCode reports whether code is a 4xx/5xx status that Envoy's
// HttpStatus enum defines (other codes fail its validation).
func isStatusCode(code uint32) bool {
	_, defined := typev3.StatusCode_name[int32(code)]
	return code >= 400 && code <= 599 && defined
}
