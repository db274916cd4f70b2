package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

func benchBolt(b *testing.B) Store {
	s, err := OpenBolt(filepath.Join(b.TempDir(), "db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// BenchmarkBoltPut is dominated by bbolt's fsync per commit.
func BenchmarkBoltPut(b *testing.B) {
	s := benchBolt(b)
	ctx := context.Background()
	value := make([]byte, 512)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Put(ctx, fmt.Sprintf("svc/%d", i%1000), value, -1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBoltGet(b *testing.B) {
	s := benchBolt(b)
	ctx := context.Background()
	for i := range 1000 {
		if _, err := s.Put(ctx, fmt.Sprintf("svc/%d", i), make([]byte, 512), -1); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Get(ctx, "svc/500"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHubPublish measures the writer's cost of fanning one event out
// to many watchers (the events are delivered by the watchers' goroutines).
func BenchmarkHubPublish(b *testing.B) {
	for _, watchers := range []int{1, 100, 1000} {
		b.Run(fmt.Sprint(watchers), func(b *testing.B) {
			h := newHub(0, boltHistory)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for range watchers {
				ch := h.subscribe(ctx, "svc/", 0)
				go func() {
					for range ch {
					}
				}()
			}
			b.ReportAllocs()
			var rev int64
			for b.Loop() {
				rev++
				h.publish([]Event{{Type: EventPut, KV: KV{Key: "svc/a", Revision: rev}}})
			}
			b.StopTimer()
			h.close()
		})
	}
}
