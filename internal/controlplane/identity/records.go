package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/omnirelay/omnirelay/internal/controlplane/store"
)

// Store layout. Join tokens are keyed by the SHA-256 of the token, so that
// reading the store never yields a usable token.
const (
	tokenPrefix = "/identity/tokens/"
	nodePrefix  = "/identity/nodes/"
)

// Limits on operator input.
const (
	maxNodeIDLen    = 128
	DefaultTokenTTL = time.Hour
	MaxTokenTTL     = 720 * time.Hour
)

// casAttempts bounds the read-modify-write loops on a node record; a
// conflict means another replica (or request) changed the node in between.
const casAttempts = 8

type tokenRecord struct {
	NodeID    string    `json:"node_id"`
	SPIFFEID  string    `json:"spiffe_id"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Node is what MeshKit records about a node enrolled with a join token.
type Node struct {
	NodeID    string    `json:"node_id"`
	SPIFFEID  string    `json:"spiffe_id"`
	CreatedAt time.Time `json:"created_at"`
	Revoked   bool      `json:"revoked,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	// The last SVID issued to the node.
	LastIssuedAt  time.Time `json:"last_issued_at,omitzero"`
	CertExpiresAt time.Time `json:"cert_expires_at,omitzero"`
	Serial        string    `json:"serial,omitempty"`
}

// Errors of the records layer; the service maps them to gRPC codes.
var (
	errBadToken     = errors.New("join token unknown, used or expired")
	errUnknownNode  = errors.New("unknown node")
	errRevoked      = errors.New("node revoked")
	errOtherID      = errors.New("node holds another SPIFFE ID")
	errInvalidInput = errors.New("invalid input")
)

// validNodeID keeps node IDs to characters that are safe in a store key, a
// certificate subject and a log line; Envoy-style IDs
// (sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local) fit.
func validNodeID(id string) error {
	if id == "" || len(id) > maxNodeIDLen {
		return fmt.Errorf("%w: node id must be 1 to %d characters", errInvalidInput, maxNodeIDLen)
	}
	for _, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._~:@-", r)
		if !ok {
			return fmt.Errorf("%w: node id %q: character %q not allowed (letters, digits and ._~:@-)", errInvalidInput, id, r)
		}
	}
	return nil
}

// parseWorkloadID accepts spiffe://<td>/ns/<namespace>/sa/<service> in the
// CA's trust domain.
func parseWorkloadID(td spiffeid.TrustDomain, s string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: spiffe id %q: %v", errInvalidInput, s, err)
	}
	if !id.MemberOf(td) {
		return spiffeid.ID{}, fmt.Errorf("%w: spiffe id %q is not in trust domain %q", errInvalidInput, s, td.Name())
	}
	seg := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(seg) != 4 || seg[0] != "ns" || seg[2] != "sa" {
		return spiffeid.ID{}, fmt.Errorf("%w: spiffe id %q: want spiffe://%s/ns/<namespace>/sa/<service>", errInvalidInput, s, td.Name())
	}
	return id, nil
}

func tokenKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return tokenPrefix + hex.EncodeToString(sum[:])
}

func newToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("identity: token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// enrol creates the node record, or keeps an existing one for the same
// SPIFFE ID (a node that lost its key enrols again), then stores a token.
func enrol(ctx context.Context, st store.Store, nodeID string, id spiffeid.ID, now time.Time, ttl time.Duration) (string, time.Time, error) {
	for range casAttempts {
		kv, err := st.Get(ctx, nodePrefix+nodeID)
		switch {
		case err == nil:
			var n Node
			if err := json.Unmarshal(kv.Value, &n); err != nil {
				return "", time.Time{}, fmt.Errorf("node %q record: %w", nodeID, err)
			}
			if n.Revoked {
				return "", time.Time{}, fmt.Errorf("node %q: %w: enrol it under a new node id", nodeID, errRevoked)
			}
			if n.SPIFFEID != id.String() {
				return "", time.Time{}, fmt.Errorf("node %q: %w (%s): revoke it and use a new node id", nodeID, errOtherID, n.SPIFFEID)
			}
		case errors.Is(err, store.ErrNotFound):
			n := Node{NodeID: nodeID, SPIFFEID: id.String(), CreatedAt: now}
			data, _ := json.Marshal(n)
			if _, err := st.Put(ctx, nodePrefix+nodeID, data, 0); err != nil {
				if errors.Is(err, store.ErrConflict) {
					continue
				}
				return "", time.Time{}, fmt.Errorf("node %q: store: %w", nodeID, err)
			}
		default:
			return "", time.Time{}, fmt.Errorf("node %q: read: %w", nodeID, err)
		}
		tok, err := newToken()
		if err != nil {
			return "", time.Time{}, err
		}
		exp := now.Add(ttl)
		data, _ := json.Marshal(tokenRecord{NodeID: nodeID, SPIFFEID: id.String(), CreatedAt: now, ExpiresAt: exp})
		if _, err := st.Put(ctx, tokenKey(tok), data, 0); err != nil {
			return "", time.Time{}, fmt.Errorf("node %q: store token: %w", nodeID, err)
		}
		return tok, exp, nil
	}
	return "", time.Time{}, fmt.Errorf("node %q: %w after %d attempts", nodeID, store.ErrConflict, casAttempts)
}

// consumeToken deletes the token (a compare-and-delete, so that of two
// concurrent uses only one wins) and returns it if it had not expired.
func consumeToken(ctx context.Context, st store.Store, token string, now time.Time) (tokenRecord, error) {
	key := tokenKey(token)
	kv, err := st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return tokenRecord{}, errBadToken
	}
	if err != nil {
		return tokenRecord{}, fmt.Errorf("read token: %w", err)
	}
	if err := st.Delete(ctx, key, kv.Revision); err != nil {
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) {
			return tokenRecord{}, errBadToken
		}
		return tokenRecord{}, fmt.Errorf("consume token: %w", err)
	}
	var rec tokenRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return tokenRecord{}, fmt.Errorf("token record: %w", err)
	}
	if !now.Before(rec.ExpiresAt) {
		return tokenRecord{}, errBadToken
	}
	return rec, nil
}

// updateNode applies f to the node record under compare-and-set, so that a
// revocation racing with a renewal is never overwritten: whichever writes
// second sees the other's change and decides again.
func updateNode(ctx context.Context, st store.Store, nodeID string, f func(*Node) error) (Node, error) {
	for range casAttempts {
		kv, err := st.Get(ctx, nodePrefix+nodeID)
		if errors.Is(err, store.ErrNotFound) {
			return Node{}, fmt.Errorf("node %q: %w", nodeID, errUnknownNode)
		}
		if err != nil {
			return Node{}, fmt.Errorf("node %q: read: %w", nodeID, err)
		}
		var n Node
		if err := json.Unmarshal(kv.Value, &n); err != nil {
			return Node{}, fmt.Errorf("node %q record: %w", nodeID, err)
		}
		if err := f(&n); err != nil {
			return Node{}, err
		}
		data, _ := json.Marshal(n)
		if _, err := st.Put(ctx, nodePrefix+nodeID, data, kv.Revision); err != nil {
			if errors.Is(err, store.ErrConflict) {
				continue
			}
			return Node{}, fmt.Errorf("node %q: store: %w", nodeID, err)
		}
		return n, nil
	}
	return Node{}, fmt.Errorf("node %q: %w after %d attempts", nodeID, store.ErrConflict, casAttempts)
}

// dropTokens deletes the unused tokens of a node.
func dropTokens(ctx context.Context, st store.Store, nodeID string) (int, error) {
	kvs, _, err := st.List(ctx, tokenPrefix)
	if err != nil {
		return 0, fmt.Errorf("list tokens: %w", err)
	}
	n := 0
	for _, kv := range kvs {
		var rec tokenRecord
		if json.Unmarshal(kv.Value, &rec) != nil || rec.NodeID != nodeID {
			continue
		}
		if err := st.Delete(ctx, kv.Key, kv.Revision); err == nil {
			n++
		} else if !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict) {
			return n, fmt.Errorf("delete token: %w", err)
		}
	}
	return n, nil
}

func listNodes(ctx context.Context, st store.Store) ([]Node, error) {
	kvs, _, err := st.List(ctx, nodePrefix)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	out := make([]Node, 0, len(kvs))
	for _, kv := range kvs {
		var n Node
		if err := json.Unmarshal(kv.Value, &n); err != nil {
			return nil, fmt.Errorf("node record %s: %w", kv.Key, err)
		}
		out = append(out, n)
	}
	return out, nil
}
