package jwtauthn

import "sync"

// tokenCache remembers tokens whose signature verified (Envoy's
// jwt_cache_config), so a client sending the same token on every request
// costs a map lookup instead of an RSA/ECDSA verification. What is cached is
// only the signature's outcome: issuer, audience and time claims are checked
// again on every hit, and an entry is valid only with the key-set snapshot
// that verified it, so a JWKS refresh (rotation, revocation) empties it in
// effect.
type tokenCache struct {
	max     int
	maxSize int

	mu sync.Mutex
	m  map[string]cachedToken
}

type cachedToken struct {
	keys    *keySet
	claims  map[string]any
	payload []byte
}

func newTokenCache(size, maxTokenSize uint32) *tokenCache {
	if size == 0 {
		size = 100 // Envoy's default jwt_cache_size
	}
	if maxTokenSize == 0 || maxTokenSize > MaxTokenBytes {
		maxTokenSize = 4096 // Envoy's default jwt_max_token_size
	}
	return &tokenCache{max: int(size), maxSize: int(maxTokenSize), m: make(map[string]cachedToken, size)}
}

func (c *tokenCache) get(tok string, keys *keySet) (cachedToken, bool) {
	if c == nil {
		return cachedToken{}, false
	}
	c.mu.Lock()
	e, ok := c.m[tok]
	c.mu.Unlock()
	if !ok || e.keys != keys {
		return cachedToken{}, false
	}
	return e, true
}

func (c *tokenCache) put(tok string, e cachedToken) {
	if c == nil || len(tok) > c.maxSize {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		// Evict an arbitrary entry: map order is random enough to keep a
		// flood of distinct tokens from pinning the cache.
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[tok] = e
}
