package jwtauthn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
)

// maxJWKSBytes bounds a fetched JWKS document: a key set is a few KiB, and a
// compromised endpoint must not make the proxy buffer megabytes.
const maxJWKSBytes = 1 << 20

// errNoKeys is returned when a provider has no usable key yet (first fetch
// failed or pending). Access is never granted without a key.
var errNoKeys = errors.New("jwks: no keys available")

// verifyKey is one key a token may be verified with: the raw crypto key and
// the algorithms that key may be used with (its JWK "alg" when set, otherwise
// the family its "kty" implies).
type verifyKey struct {
	kid  string
	raw  any
	algs []jwa.SignatureAlgorithm
}

func (k *verifyKey) allows(alg jwa.SignatureAlgorithm) bool {
	for _, a := range k.algs {
		if a == alg {
			return true
		}
	}
	return false
}

// keySet is an immutable snapshot of a provider's keys.
type keySet struct {
	keys      []verifyKey
	fetchedAt time.Time
}

// lookup returns the candidate keys for kid ("" matches every key, as in
// Envoy, which tries each key of the set when the token names none).
func (ks *keySet) lookup(kid string, alg jwa.SignatureAlgorithm, dst []*verifyKey) []*verifyKey {
	if ks == nil {
		return dst
	}
	for i := range ks.keys {
		k := &ks.keys[i]
		if (kid == "" || k.kid == kid) && k.allows(alg) {
			dst = append(dst, k)
		}
	}
	return dst
}

func (ks *keySet) hasKID(kid string) bool {
	if ks == nil {
		return false
	}
	for i := range ks.keys {
		if ks.keys[i].kid == kid {
			return true
		}
	}
	return false
}

// parseKeySet turns a JWKS document into verify keys. allowSymmetric is
// false for remote sets: a shared secret served over HTTP is a leaked secret,
// and accepting "oct" keys there would let a token signed with HMAC pass
// against whatever bytes the endpoint serves.
func parseKeySet(doc []byte, allowSymmetric bool) (*keySet, error) {
	set, err := jwk.Parse(doc)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	ks := &keySet{}
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		if use, ok := k.KeyUsage(); ok && use != "" && use != "sig" {
			continue
		}
		algs := familyAlgs(k.KeyType(), allowSymmetric)
		if a, ok := k.Algorithm(); ok {
			sa, ok := jwa.LookupSignatureAlgorithm(a.String())
			if !ok || !contains(algs, sa) {
				// A key pinned to an algorithm its type cannot do (or to
				// "none") is unusable rather than widened.
				continue
			}
			algs = []jwa.SignatureAlgorithm{sa}
		}
		if len(algs) == 0 {
			continue
		}
		var raw any
		if err := jwk.Export(k, &raw); err != nil {
			return nil, fmt.Errorf("jwks: key %d: %w", i, err)
		}
		kid, _ := k.KeyID()
		ks.keys = append(ks.keys, verifyKey{kid: kid, raw: raw, algs: algs})
	}
	if len(ks.keys) == 0 {
		return nil, errors.New("jwks: no usable signing keys")
	}
	return ks, nil
}

// familyAlgs is the algorithm allow-list a key type implies. "none" is never
// in it, and HMAC only for symmetric keys from trusted (inline) config, so an
// RSA public key can never be used as an HMAC secret (key confusion).
func familyAlgs(kty jwa.KeyType, allowSymmetric bool) []jwa.SignatureAlgorithm {
	switch kty {
	case jwa.RSA():
		return []jwa.SignatureAlgorithm{jwa.RS256(), jwa.RS384(), jwa.RS512(), jwa.PS256(), jwa.PS384(), jwa.PS512()}
	case jwa.EC():
		return []jwa.SignatureAlgorithm{jwa.ES256(), jwa.ES384(), jwa.ES512()}
	case jwa.OKP():
		return []jwa.SignatureAlgorithm{jwa.EdDSA(), jwa.EdDSAEd25519()}
	case jwa.OctetSeq():
		if allowSymmetric {
			return []jwa.SignatureAlgorithm{jwa.HS256(), jwa.HS384(), jwa.HS512()}
		}
	}
	return nil
}

func contains(algs []jwa.SignatureAlgorithm, a jwa.SignatureAlgorithm) bool {
	for _, x := range algs {
		if x == a {
			return true
		}
	}
	return false
}

// keySource yields a provider's keys. keys may block (first remote fetch)
// honouring ctx; kid lets a remote source refetch on an unknown key id.
type keySource interface {
	keys(ctx context.Context, kid string) (*keySet, error)
}

type staticKeys struct{ set *keySet }

func (s staticKeys) keys(context.Context, string) (*keySet, error) { return s.set, nil }

// remoteKeys fetches a JWKS over HTTP and caches it. No goroutine outlives a
// fetch: filters have no close hook (they are dropped with their config
// version), so refreshes are started by requests that find the set stale and
// run to the fetch timeout at most.
//
// Freshness rules: a set older than ttl is served while one background fetch
// replaces it (stale-while-revalidate); a failed fetch keeps the old set and
// is retried after retryAfter; an unknown kid triggers a refetch at most once
// per minRefetch (rotation); with no set at all requests wait for the fetch
// (bounded by their context) and fail closed on error.
type remoteKeys struct {
	uri        string
	client     *http.Client
	timeout    time.Duration
	ttl        time.Duration
	retryAfter time.Duration
	minRefetch time.Duration
	now        func() time.Time
	onFetch    func(ok bool)

	cur       atomic.Pointer[keySet]
	fetching  atomic.Bool
	mu        sync.Mutex // guards lastTry and done
	lastTry   time.Time
	lastOK    bool
	done      chan struct{} // closed when the running fetch ends
	fetchErrs atomic.Int64
}

func (r *remoteKeys) keys(ctx context.Context, kid string) (*keySet, error) {
	ks := r.cur.Load()
	now := r.now()
	switch {
	case ks == nil:
		if err := r.waitFetch(ctx); err != nil {
			return nil, err
		}
		if ks = r.cur.Load(); ks == nil {
			return nil, errNoKeys
		}
	case kid != "" && !ks.hasKID(kid):
		// Possibly a rotated key: fetch now and wait, but not more often
		// than minRefetch, so random kids cannot hammer the JWKS endpoint.
		if r.mayRefetch(now, r.minRefetch) {
			_ = r.waitFetch(ctx)
			ks = r.cur.Load()
		}
	case now.Sub(ks.fetchedAt) > r.ttl:
		if r.mayRefetch(now, r.retryAfter) {
			r.startFetch()
		}
	}
	return ks, nil
}

// mayRefetch reports whether a fetch may start now: the previous attempt is
// older than gap (a failed attempt always waits retryAfter).
func (r *remoteKeys) mayRefetch(now time.Time, gap time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.lastOK && gap < r.retryAfter {
		gap = r.retryAfter
	}
	return r.lastTry.IsZero() || now.Sub(r.lastTry) >= gap
}

// startFetch begins a fetch unless one runs, returning its done channel.
func (r *remoteKeys) startFetch() chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fetching.Load() {
		return r.done
	}
	r.fetching.Store(true)
	r.lastTry = r.now()
	done := make(chan struct{})
	r.done = done
	go func() {
		defer close(done)
		ok := r.fetch() == nil
		r.mu.Lock()
		r.lastOK = ok
		r.fetching.Store(false)
		r.mu.Unlock()
		if r.onFetch != nil {
			r.onFetch(ok)
		}
	}()
	return done
}

func (r *remoteKeys) waitFetch(ctx context.Context) error {
	done := r.startFetch()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("jwks %s: %w", r.uri, ctx.Err())
	}
}

func (r *remoteKeys) fetch() error {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.uri, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	// Fetches are minutes apart: an idle keep-alive connection (and its
	// transport goroutines) per provider would outlive the config version.
	req.Close = true
	resp, err := r.client.Do(req)
	if err != nil {
		r.fetchErrs.Add(1)
		return fmt.Errorf("jwks %s: %w", r.uri, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		r.fetchErrs.Add(1)
		return fmt.Errorf("jwks %s: status %d", r.uri, resp.StatusCode)
	}
	doc, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil || len(doc) > maxJWKSBytes {
		r.fetchErrs.Add(1)
		return fmt.Errorf("jwks %s: body unreadable or over %d bytes", r.uri, maxJWKSBytes)
	}
	ks, err := parseKeySet(doc, false)
	if err != nil {
		// A broken document must not wipe good keys: keep serving the old
		// set (and with none, stay closed).
		r.fetchErrs.Add(1)
		return fmt.Errorf("jwks %s: %w", r.uri, err)
	}
	ks.fetchedAt = r.now()
	r.cur.Store(ks)
	return nil
}

// jwksStore shares remote key sets across config versions. Filters are
// rebuilt on every config change; without it each version would start with
// no keys, refetch, and, with the JWKS endpoint down at that moment, refuse
// every token although good keys were cached a moment before. Entries are
// keyed by URI and cache settings and live as long as the factory (one per
// proxy); no goroutine is attached to them.
type jwksStore struct {
	mu sync.Mutex
	m  map[string]*remoteKeys
}

// share returns the stored source with rk's URI and settings, or stores rk.
// A nil store shares nothing.
func (st *jwksStore) share(rk *remoteKeys) *remoteKeys {
	if st == nil {
		return rk
	}
	key := fmt.Sprintf("%s|%s|%s|%s", rk.uri, rk.ttl, rk.timeout, rk.retryAfter)
	st.mu.Lock()
	defer st.mu.Unlock()
	if old, ok := st.m[key]; ok {
		return old
	}
	st.m[key] = rk
	return rk
}
