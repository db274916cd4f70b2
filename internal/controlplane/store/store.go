// Package store owns MeshKit's durable state: a small versioned key-value
// interface with compare-and-set writes, prefix watches and leader election.
//
// Store is a seam because MeshKit runs in two shapes. A single
// MeshKit embeds bbolt (OpenBolt): no other process to run, state survives a
// restart. Several MeshKit replicas share etcd (OpenEtcd): every replica sees
// the same revisions through its watch, so they serve the same xDS versions,
// and Campaign picks the one replica that runs the work that must run once
// (lease expiry). Callers depend only on Store, and the conformance tests run
// the same table against both implementations.
//
// Revisions follow etcd's model so that both implementations mean the same
// thing by them: one store-wide counter, strictly increasing, bumped by every
// successful Put or Delete; a key's Revision is the counter value of its last
// change (its mod revision). The usual read loop is List, then Watch from the
// revision List returned; when the watch channel closes, List again.
package store

import (
	"context"
	"errors"
)

var (
	// ErrNotFound reports that a key does not exist.
	ErrNotFound = errors.New("key not found")
	// ErrConflict reports that a conditional write saw a different revision
	// than the caller expected: someone else wrote first.
	ErrConflict = errors.New("revision conflict")
	// ErrClosed reports a call on a closed store.
	ErrClosed = errors.New("store closed")
)

// KV is one key with its value and mod revision.
type KV struct {
	Key   string
	Value []byte
	// Revision is the store revision of the key's last change.
	Revision int64
}

// EventType says what happened to a key.
type EventType int

const (
	// EventPut is a create or an update; Event.KV holds the new value.
	EventPut EventType = iota
	// EventDelete is a deletion; Event.KV holds the key and the revision of
	// the deletion, and no value.
	EventDelete
)

func (t EventType) String() string {
	switch t {
	case EventPut:
		return "put"
	case EventDelete:
		return "delete"
	}
	return "unknown"
}

// Event is one change seen by a watch.
type Event struct {
	Type EventType
	KV   KV
}

// Store is MeshKit's state store. All methods are safe for concurrent use.
// Keys are arbitrary strings; prefixes are plain byte prefixes ("" is every
// key).
type Store interface {
	// Get returns a key, or ErrNotFound.
	Get(ctx context.Context, key string) (KV, error)
	// List returns the keys under prefix sorted by key, and the store
	// revision the listing reflects (pass it to Watch to miss nothing).
	List(ctx context.Context, prefix string) ([]KV, int64, error)
	// Put writes a key and returns its new mod revision. expectRev < 0
	// writes unconditionally; expectRev == 0 requires that the key not
	// exist; expectRev > 0 requires that it equal the key's mod revision.
	// A failed condition returns ErrConflict and changes nothing.
	Put(ctx context.Context, key string, value []byte, expectRev int64) (int64, error)
	// Delete removes a key; a missing key is ErrNotFound. expectRev > 0
	// requires that it equal the key's mod revision (else ErrConflict);
	// expectRev <= 0 deletes unconditionally.
	Delete(ctx context.Context, key string, expectRev int64) error
	// Watch sends, in revision order, the changes under prefix with a
	// revision greater than afterRev, in batches (one write's events are
	// never split across batches). The channel closes when ctx ends, when
	// the store closes, or when the store can no longer replay from
	// afterRev (compacted history, a consumer too slow to keep up, a lost
	// etcd leader): the caller then Lists and Watches again. Watch itself
	// never blocks. Batches may share memory with other watchers: treat
	// them as read-only.
	Watch(ctx context.Context, prefix string, afterRev int64) <-chan []Event
	// Campaign blocks until the caller, named id, leads election, or ctx
	// ends (then it returns ctx's error). Leadership lasts until Resign,
	// until the store closes, or (etcd) until the session's lease is lost;
	// ctx only bounds the wait.
	Campaign(ctx context.Context, election, id string) (Leadership, error)
	// Close releases the store: watches close, leaderships are lost.
	Close() error
}

// Leadership is a won election.
type Leadership interface {
	// Lost is closed once this leadership is over, whatever the cause.
	// Work that must run once stops when it closes.
	Lost() <-chan struct{}
	// Resign gives up leadership so that another campaigner can win.
	Resign(ctx context.Context) error
}
