package secrets

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
)

// ErrStaleSession marks a client handshake that resumed a TLS session whose
// peer certificate no longer verifies (it expired, or the bundle or the
// expected identity changed since the session was made). The session is
// dropped from its cache, so a new handshake is a full one: HandshakeClient
// makes it at once.
var ErrStaleSession = errors.New("resumed TLS session no longer verifies")

// sessionCache is the client session cache of one upstream TLS context.
//
// A resumed session carries the peer certificate of the full handshake that
// made it, and so do the tickets a resumed connection receives: the old
// certificate outlives its rotation. crypto/tls refuses to resume past that
// certificate's expiry only when it verifies the peer itself; ClientConfig
// verifies in VerifyConnection (live roots, SPIFFE IDs), which sees the old
// certificate and fails. When that happens the cache drops every session
// stored so far and HandshakeClient retries at once with a full handshake,
// so a rotation costs one extra handshake per cached session, not a failed
// connection.
type sessionCache struct {
	mu      sync.Mutex
	max     int
	entries map[string]sessionEntry
	seq     uint64
	// notBefore: sessions stored before it are not resumed.
	notBefore uint64
}

type sessionEntry struct {
	cs  *tls.ClientSessionState
	seq uint64
}

func newSessionCache(max int) *sessionCache {
	return &sessionCache{max: max, entries: make(map[string]sessionEntry)}
}

func (c *sessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return nil, false
	}
	if e.seq < c.notBefore {
		delete(c.entries, key)
		return nil, false
	}
	return e.cs, true
}

func (c *sessionCache) Put(key string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs == nil {
		delete(c.entries, key)
		return
	}
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.max {
		// Upstream contexts talk to a few names: dropping the oldest entry
		// is enough and needs no list.
		oldest, oldestSeq := "", ^uint64(0)
		for k, e := range c.entries {
			if e.seq < oldestSeq {
				oldest, oldestSeq = k, e.seq
			}
		}
		delete(c.entries, oldest)
	}
	c.seq++
	c.entries[key] = sessionEntry{cs: cs, seq: c.seq}
}

// flush stops every session stored so far from being resumed. The cache
// does not know which key a failing connection used (with no server name
// it is the peer address), and a rotation concerns them all anyway.
func (c *sessionCache) flush() {
	c.mu.Lock()
	c.notBefore = c.seq + 1
	c.mu.Unlock()
}

// checkResumed applies the cache policy to a connection whose
// verification gave err.
func (c *sessionCache) checkResumed(cs tls.ConnectionState, err error) error {
	if err == nil || !cs.DidResume {
		return err
	}
	c.flush()
	return fmt.Errorf("%w: %w", ErrStaleSession, err)
}

// HandshakeClient runs the client handshake of cfg over nc. When the
// handshake resumed a stale session (ErrStaleSession), it closes nc and
// runs one full handshake, without session cache, on a new connection from
// redial: a session resumed from a ticket that a stale connection received
// would carry the old certificate again. On error every connection it was
// given or dialled is closed.
func HandshakeClient(ctx context.Context, nc net.Conn, cfg *tls.Config, redial func(context.Context) (net.Conn, error)) (*tls.Conn, error) {
	tc := tls.Client(nc, cfg)
	err := tc.HandshakeContext(ctx)
	if err == nil {
		return tc, nil
	}
	nc.Close()
	if !errors.Is(err, ErrStaleSession) || redial == nil {
		return nil, err
	}
	nc, derr := redial(ctx)
	if derr != nil {
		return nil, derr
	}
	full := cfg.Clone()
	full.ClientSessionCache = nil
	tc = tls.Client(nc, full)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return tc, nil
}
