package jwtauthn

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// MaxTokenBytes is the longest token accepted. Longer ones are rejected
// before any decoding: real tokens are well under 2 KiB, and the bound keeps
// a hostile header from costing base64 and JSON work.
const MaxTokenBytes = 8 << 10

// Defaults, as in Envoy where it has one.
const (
	defaultCacheDuration = 10 * time.Minute
	defaultFetchTimeout  = 5 * time.Second
	defaultRetryAfter    = time.Second
	defaultMinRefetch    = 10 * time.Second
)

var (
	errMissing = errors.New("jwt is missing")
	errInvalid = errors.New("jwt verification fails")
)

type location struct {
	header string // lower-case header name, or ""
	prefix string
	param  string
	cookie string
}

type claimHeader struct {
	header string
	path   []string
}

// provider is one compiled JwtProvider.
type provider struct {
	name          string
	issuer        string
	audiences     []string
	locations     []location
	forward       bool
	payloadHeader string
	metadataKey   string
	skew          time.Duration
	requireExp    bool
	claimHeaders  []claimHeader
	src           keySource
	now           func() time.Time
	cache         *tokenCache // nil: no jwt_cache_config
}

func compileProvider(name string, p *jwtv3.JwtProvider, now func() time.Time, client *http.Client, onFetch func(bool), store *jwksStore) (*provider, error) {
	pr := &provider{
		name:          name,
		issuer:        p.GetIssuer(),
		audiences:     p.GetAudiences(),
		forward:       p.GetForward(),
		payloadHeader: strings.ToLower(p.GetForwardPayloadHeader()),
		metadataKey:   p.GetPayloadInMetadata(),
		skew:          time.Duration(p.GetClockSkewSeconds()) * time.Second,
		requireExp:    p.GetRequireExpiration(),
		now:           now,
	}
	if p.GetClockSkewSeconds() == 0 {
		pr.skew = 60 * time.Second // Envoy's default
	}
	switch {
	case p.GetSubjects() != nil:
		return nil, errors.New("subjects: not supported")
	case p.GetMaxLifetime() != nil:
		return nil, errors.New("max_lifetime: not supported")
	case p.GetNormalizePayloadInMetadata() != nil:
		return nil, errors.New("normalize_payload_in_metadata: not supported")
	case p.GetHeaderInMetadata() != "", p.GetFailedStatusInMetadata() != "":
		return nil, errors.New("header_in_metadata/failed_status_in_metadata: not supported")
	case p.GetPadForwardPayloadHeader():
		return nil, errors.New("pad_forward_payload_header: not supported")
	}
	if cc := p.GetJwtCacheConfig(); cc != nil {
		pr.cache = newTokenCache(cc.GetJwtCacheSize(), cc.GetJwtMaxTokenSize())
	}
	for i, h := range p.GetFromHeaders() {
		if h.GetName() == "" {
			return nil, fmt.Errorf("from_headers[%d].name: empty", i)
		}
		pr.locations = append(pr.locations, location{header: strings.ToLower(h.GetName()), prefix: h.GetValuePrefix()})
	}
	for _, q := range p.GetFromParams() {
		pr.locations = append(pr.locations, location{param: q})
	}
	for _, c := range p.GetFromCookies() {
		pr.locations = append(pr.locations, location{cookie: c})
	}
	if len(pr.locations) == 0 {
		// Envoy's default locations.
		pr.locations = []location{{header: "authorization", prefix: "Bearer "}, {param: "access_token"}}
	}
	for i, c := range p.GetClaimToHeaders() {
		if c.GetHeaderName() == "" || c.GetClaimName() == "" {
			return nil, fmt.Errorf("claim_to_headers[%d]: header_name and claim_name are required", i)
		}
		if len(c.GetClaimPath()) > 0 {
			return nil, fmt.Errorf("claim_to_headers[%d].claim_path: not supported (use a dotted claim_name)", i)
		}
		pr.claimHeaders = append(pr.claimHeaders, claimHeader{header: strings.ToLower(c.GetHeaderName()), path: strings.Split(c.GetClaimName(), ".")})
	}

	switch {
	case p.GetLocalJwks() != nil:
		doc := p.GetLocalJwks().GetInlineString()
		if doc == "" {
			doc = string(p.GetLocalJwks().GetInlineBytes())
		}
		if doc == "" {
			return nil, errors.New("local_jwks: only inline_string and inline_bytes are supported")
		}
		ks, err := parseKeySet([]byte(doc), true)
		if err != nil {
			return nil, fmt.Errorf("local_jwks: %w", err)
		}
		pr.src = staticKeys{set: ks}
	case p.GetRemoteJwks() != nil:
		rj := p.GetRemoteJwks()
		u, err := url.Parse(rj.GetHttpUri().GetUri())
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("remote_jwks.http_uri.uri: %q is not an http(s) URL", rj.GetHttpUri().GetUri())
		}
		if rj.GetRetryPolicy() != nil {
			return nil, errors.New("remote_jwks.retry_policy: not supported")
		}
		rk := &remoteKeys{
			uri:        u.String(),
			client:     client,
			timeout:    durOr(rj.GetHttpUri().GetTimeout().AsDuration(), defaultFetchTimeout),
			ttl:        durOr(rj.GetCacheDuration().AsDuration(), defaultCacheDuration),
			retryAfter: durOr(rj.GetAsyncFetch().GetFailedRefetchDuration().AsDuration(), defaultRetryAfter),
			minRefetch: defaultMinRefetch,
			now:        now,
			onFetch:    onFetch,
		}
		rk = store.share(rk)
		if rj.GetAsyncFetch() != nil && rk.cur.Load() == nil {
			rk.startFetch()
		}
		pr.src = rk
	default:
		return nil, errors.New("jwks_source_specifier: one of remote_jwks or local_jwks is required")
	}
	return pr, nil
}

func durOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// extract returns the first token found in the provider's locations and
// where, or "" when there is none.
func (p *provider) extract(r *message.Request) (string, *location) {
	for i := range p.locations {
		l := &p.locations[i]
		if tok := l.find(r); tok != "" {
			return tok, l
		}
	}
	return "", nil
}

func (l *location) find(r *message.Request) string {
	switch {
	case l.header != "":
		v, ok := r.Header.Get(l.header)
		if !ok {
			return ""
		}
		if l.prefix != "" {
			if len(v) < len(l.prefix) || !strings.EqualFold(string(v[:len(l.prefix)]), l.prefix) {
				return ""
			}
			v = v[len(l.prefix):]
		}
		return string(bytes.TrimSpace(v))
	case l.param != "":
		q := r.Query()
		for len(q) > 0 {
			var kv []byte
			kv, q, _ = bytes.Cut(q, []byte{'&'})
			k, v, _ := bytes.Cut(kv, []byte{'='})
			if string(k) == l.param {
				s, err := url.QueryUnescape(string(v))
				if err != nil {
					return string(v) // left undecoded: verification rejects it
				}
				return s
			}
		}
	case l.cookie != "":
		for i := 0; i < r.Header.Len(); i++ {
			f := r.Header.At(i)
			if string(f.Name) != "cookie" {
				continue
			}
			for c := range strings.SplitSeq(string(f.Value), ";") {
				k, v, ok := strings.Cut(strings.TrimSpace(c), "=")
				if ok && k == l.cookie {
					return strings.Trim(v, `"`)
				}
			}
		}
	}
	return ""
}

// verify checks tok against the provider: size, shape, algorithm allow-list,
// signature, then issuer, audience and time claims. Every failure is
// errInvalid (or errNoKeys wrapped in it): callers answer 401 whatever the
// cause, and the cause never reaches the client.
func (p *provider) verify(ctx context.Context, tok string, audiences []string) (map[string]any, []byte, error) {
	if len(tok) > MaxTokenBytes || strings.Count(tok, ".") != 2 {
		return nil, nil, errInvalid
	}
	if p.cache != nil {
		// keys(ctx, "") also starts a due background refresh.
		if ks, err := p.src.keys(ctx, ""); err == nil {
			if e, ok := p.cache.get(tok, ks); ok {
				if err := p.checkClaims(e.claims, audiences); err != nil {
					return nil, nil, err
				}
				return e.claims, e.payload, nil
			}
		}
	}
	msg, err := jws.Parse([]byte(tok), jws.WithCompact())
	if err != nil || len(msg.Signatures()) != 1 {
		return nil, nil, errInvalid
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	alg, ok := hdr.Algorithm()
	if !ok || alg == jwa.NoSignature() {
		return nil, nil, errInvalid
	}
	kid, _ := hdr.KeyID()
	ks, err := p.src.keys(ctx, kid)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errInvalid, err)
	}
	var buf [4]*verifyKey
	var payload []byte
	for _, k := range ks.lookup(kid, alg, buf[:0]) {
		if payload, err = jws.VerifyCompactFast(k.raw, []byte(tok), alg); err == nil {
			break
		}
		payload = nil
	}
	if payload == nil {
		return nil, nil, errInvalid
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil || claims == nil {
		return nil, nil, errInvalid
	}
	// Cache the signature's outcome before the claim checks: an expired
	// token stays rejected on every hit, since those checks run each time.
	p.cache.put(tok, cachedToken{keys: ks, claims: claims, payload: payload})
	if err := p.checkClaims(claims, audiences); err != nil {
		return nil, nil, err
	}
	return claims, payload, nil
}

func (p *provider) checkClaims(c map[string]any, audiences []string) error {
	if p.issuer != "" {
		if iss, _ := c["iss"].(string); iss != p.issuer {
			return errInvalid
		}
	}
	if len(audiences) > 0 && !audienceMatch(c["aud"], audiences) {
		return errInvalid
	}
	now := p.now()
	exp, hasExp, ok := numericDate(c, "exp")
	if !ok || (p.requireExp && !hasExp) {
		return errInvalid
	}
	if hasExp && now.After(exp.Add(p.skew)) {
		return errInvalid
	}
	nbf, hasNbf, ok := numericDate(c, "nbf")
	if !ok || (hasNbf && now.Add(p.skew).Before(nbf)) {
		return errInvalid
	}
	return nil
}

// numericDate reads an RFC 7519 NumericDate claim. ok is false when the
// claim is present but not a number (a malformed token, rejected).
func numericDate(c map[string]any, name string) (t time.Time, present, ok bool) {
	v, present := c[name]
	if !present {
		return time.Time{}, false, true
	}
	f, isNum := v.(float64)
	if !isNum || f < 0 || f > 1<<40 {
		return time.Time{}, true, false
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)), true, true
}

func audienceMatch(aud any, want []string) bool {
	switch a := aud.(type) {
	case string:
		for _, w := range want {
			if a == w {
				return true
			}
		}
	case []any:
		for _, x := range a {
			if s, ok := x.(string); ok && audienceMatch(s, want) {
				return true
			}
		}
	}
	return false
}

// apply performs the provider's side effects after a successful check:
// token removal (forward: false), payload and claim headers.
func (p *provider) apply(s *filter.Stream, loc *location, claims map[string]any, payload []byte) {
	if !p.forward && loc != nil && loc.header != "" {
		s.Req.Header.Del(loc.header)
	}
	if p.payloadHeader != "" {
		s.Req.Header.Set(p.payloadHeader, base64.RawURLEncoding.EncodeToString(payload))
	}
	for _, ch := range p.claimHeaders {
		if v, ok := claimString(claims, ch.path); ok {
			s.Req.Header.Set(ch.header, v)
		}
	}
}

// claimString renders a claim for a header as Envoy does: strings as is,
// numbers and booleans in JSON form, string arrays comma-joined. Values with
// control characters are dropped rather than forwarded.
func claimString(c map[string]any, path []string) (string, bool) {
	var v any = c
	for _, seg := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return "", false
		}
		if v, ok = m[seg]; !ok {
			return "", false
		}
	}
	var out string
	switch x := v.(type) {
	case string:
		out = x
	case float64:
		out = strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		out = strconv.FormatBool(x)
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return "", false
			}
			parts = append(parts, s)
		}
		out = strings.Join(parts, ",")
	default:
		return "", false
	}
	for i := 0; i < len(out); i++ {
		if out[i] < 0x20 || out[i] == 0x7f {
			return "", false
		}
	}
	return out, true
}
