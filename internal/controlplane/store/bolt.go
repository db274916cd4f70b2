package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// boltHistory is how many recent events (at least) a bbolt store keeps for
// Watch to replay; a watcher further behind than this re-Lists.
const boltHistory = 4096

var (
	kvBucket   = []byte("kv")
	metaBucket = []byte("meta")
	revKey     = []byte("revision")
)

// boltStore keeps every key in one bucket, its value prefixed with its mod
// revision (8 bytes, big-endian), and the store revision in a meta bucket,
// written in the same transaction as the change so that revisions survive a
// restart and never repeat.
type boltStore struct {
	db        *bolt.DB
	hub       *hub
	elections *localElections
	closed    atomic.Bool

	// wmu spans commit and publish so that watchers receive events in
	// revision order.
	wmu sync.Mutex
}

var _ Store = (*boltStore)(nil)

// OpenBolt opens (creating if needed) the bbolt store at path. A second
// process opening the same file fails after a second instead of waiting.
func OpenBolt(path string) (Store, error) {
	return openBolt(path, boltHistory)
}

func openBolt(path string, history int) (*boltStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("store: open bolt %s: %w", path, err)
	}
	var rev int64
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(kvBucket); err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		rev, err = readRevision(meta)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: open bolt %s: %w", path, err)
	}
	return &boltStore{db: db, hub: newHub(rev, history), elections: newLocalElections()}, nil
}

func readRevision(meta *bolt.Bucket) (int64, error) {
	v := meta.Get(revKey)
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("corrupt store revision (%d bytes)", len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

func decodeValue(key string, v []byte) (KV, error) {
	if len(v) < 8 {
		return KV{}, fmt.Errorf("store: key %q: corrupt value (%d bytes)", key, len(v))
	}
	return KV{
		Key:      key,
		Value:    append([]byte(nil), v[8:]...), // bbolt's bytes die with the transaction
		Revision: int64(binary.BigEndian.Uint64(v)),
	}, nil
}

func (s *boltStore) check(ctx context.Context, op, key string, needKey bool) error {
	if s.closed.Load() {
		return fmt.Errorf("store: %s %q: %w", op, key, ErrClosed)
	}
	if needKey && key == "" {
		return fmt.Errorf("store: %s: empty key", op)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: %s %q: %w", op, key, err)
	}
	return nil
}

func (s *boltStore) Get(ctx context.Context, key string) (KV, error) {
	if err := s.check(ctx, "get", key, true); err != nil {
		return KV{}, err
	}
	var kv KV
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(kvBucket).Get([]byte(key))
		if v == nil {
			return ErrNotFound
		}
		var err error
		kv, err = decodeValue(key, v)
		return err
	})
	if err != nil {
		return KV{}, fmt.Errorf("store: get %q: %w", key, closedErr(err))
	}
	return kv, nil
}

func (s *boltStore) List(ctx context.Context, prefix string) ([]KV, int64, error) {
	if err := s.check(ctx, "list", prefix, false); err != nil {
		return nil, 0, err
	}
	var (
		kvs []KV
		rev int64
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		if rev, err = readRevision(tx.Bucket(metaBucket)); err != nil {
			return err
		}
		c := tx.Bucket(kvBucket).Cursor()
		p := []byte(prefix)
		for k, v := c.Seek(p); k != nil && strings.HasPrefix(string(k), prefix); k, v = c.Next() {
			kv, err := decodeValue(string(k), v)
			if err != nil {
				return err
			}
			kvs = append(kvs, kv)
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("store: list %q: %w", prefix, closedErr(err))
	}
	return kvs, rev, nil
}

// write runs one conditional change in a transaction, bumps the store
// revision, and publishes the resulting event. change sees the key's current
// stored bytes (nil if absent) and returns the event to record.
func (s *boltStore) write(ctx context.Context, op, key string, change func(cur []byte, rev int64) (Event, error)) (int64, error) {
	if err := s.check(ctx, op, key, true); err != nil {
		return 0, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var ev Event
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta, b := tx.Bucket(metaBucket), tx.Bucket(kvBucket)
		rev, err := readRevision(meta)
		if err != nil {
			return err
		}
		rev++
		if ev, err = change(b.Get([]byte(key)), rev); err != nil {
			return err
		}
		switch ev.Type {
		case EventPut:
			buf := make([]byte, 8+len(ev.KV.Value))
			binary.BigEndian.PutUint64(buf, uint64(rev))
			copy(buf[8:], ev.KV.Value)
			err = b.Put([]byte(key), buf)
		case EventDelete:
			err = b.Delete([]byte(key))
		}
		if err != nil {
			return err
		}
		var rb [8]byte
		binary.BigEndian.PutUint64(rb[:], uint64(rev))
		return meta.Put(revKey, rb[:])
	})
	if err != nil {
		return 0, fmt.Errorf("store: %s %q: %w", op, key, closedErr(err))
	}
	s.hub.publish([]Event{ev})
	return ev.KV.Revision, nil
}

// closedErr reports a transaction that lost the race with Close as
// ErrClosed rather than as bbolt's own error.
func closedErr(err error) error {
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

func modRevision(cur []byte) int64 {
	if len(cur) < 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(cur))
}

func (s *boltStore) Put(ctx context.Context, key string, value []byte, expectRev int64) (int64, error) {
	// Copied once here: the stored bytes, history and watchers share it.
	value = append([]byte(nil), value...)
	return s.write(ctx, "put", key, func(cur []byte, rev int64) (Event, error) {
		switch {
		case expectRev == 0 && cur != nil:
			return Event{}, fmt.Errorf("%w: key exists at revision %d", ErrConflict, modRevision(cur))
		case expectRev > 0 && cur == nil:
			return Event{}, fmt.Errorf("%w: key does not exist, expected revision %d", ErrConflict, expectRev)
		case expectRev > 0 && modRevision(cur) != expectRev:
			return Event{}, fmt.Errorf("%w: key at revision %d, expected %d", ErrConflict, modRevision(cur), expectRev)
		}
		return Event{Type: EventPut, KV: KV{Key: key, Value: value, Revision: rev}}, nil
	})
}

func (s *boltStore) Delete(ctx context.Context, key string, expectRev int64) error {
	_, err := s.write(ctx, "delete", key, func(cur []byte, rev int64) (Event, error) {
		switch {
		case cur == nil:
			return Event{}, ErrNotFound
		case expectRev > 0 && modRevision(cur) != expectRev:
			return Event{}, fmt.Errorf("%w: key at revision %d, expected %d", ErrConflict, modRevision(cur), expectRev)
		}
		return Event{Type: EventDelete, KV: KV{Key: key, Revision: rev}}, nil
	})
	return err
}

func (s *boltStore) Watch(ctx context.Context, prefix string, afterRev int64) <-chan []Event {
	return s.hub.subscribe(ctx, prefix, afterRev)
}

func (s *boltStore) Campaign(ctx context.Context, election, id string) (Leadership, error) {
	return s.elections.campaign(ctx, election, id)
}

func (s *boltStore) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.hub.close()
	s.elections.close()
	// Taking wmu waits out a write that passed check before closed was set.
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close bolt: %w", err)
	}
	return nil
}
