package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// TestBoltHistory covers the bbolt store's own "compaction": a watcher that
// asks for revisions older than the kept history, or falls too far behind,
// gets a closed channel and must re-List.
func TestBoltHistory(t *testing.T) {
	const limit = 4
	tests := []struct {
		name string
		run  func(t *testing.T, s *boltStore)
	}{
		{name: "after revision older than history", run: func(t *testing.T, s *boltStore) {
			for i := range 3 * limit {
				mustPut(t, s, fmt.Sprintf("k%d", i), "v")
			}
			waitClosed(t, s.Watch(t.Context(), "", 1))
			_, rev, _ := s.List(t.Context(), "")
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			ch := s.Watch(ctx, "", rev-limit)
			collect(t, ch, limit)
		}},
		{name: "consumer too slow", run: func(t *testing.T, s *boltStore) {
			ch := s.Watch(t.Context(), "", 0)
			// One batch is in flight to the reader; the queue behind it (at most
			// what the history could replay, 2*limit) overflows.
			for i := range 4*limit + 2 {
				mustPut(t, s, fmt.Sprintf("k%d", i), "v")
			}
			waitClosed(t, ch)
		}},
		{name: "reopened store has no history", run: func(t *testing.T, s *boltStore) {
			path := s.db.Path()
			rev := mustPut(t, s, "k", "v")
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := openBolt(path, limit)
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			waitClosed(t, s2.Watch(t.Context(), "", rev-1))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := openBolt(filepath.Join(t.TempDir(), "db"), limit)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			tc.run(t, s)
		})
	}
}

func TestBoltSecondOpenFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s2, err := OpenBolt(path); err == nil {
		s2.Close()
		t.Fatal("second open of a locked file succeeded")
	}
}
