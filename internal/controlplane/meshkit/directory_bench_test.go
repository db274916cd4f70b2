package meshkit

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

// BenchmarkDirectoryMemory measures the live heap the proxy directory
// holds per connected stream (10,000 OmniRelay nodes, each ACKing four
// types), kept in memory only (bbolt) and also published (etcd; the store
// here discards what it is sent, so only the publishing replica's own
// memory counts). Report: B/stream.
func BenchmarkDirectoryMemory(b *testing.B) {
	const n = 10000
	for _, shared := range []bool{false, true} {
		name := "memory"
		if shared {
			name = "shared"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var perStream float64
			for range b.N {
				perStream = directoryHeap(b, n, shared)
			}
			b.ReportMetric(perStream, "B/stream")
		})
	}
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func directoryHeap(b *testing.B, n int, shared bool) float64 {
	nodes := make([]string, n)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("node-%05d", i)
	}
	before := liveHeap()
	d := newProxyDirectory()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	if shared {
		d.enableShare(newMemLeaseStore(false), DirectoryOptions{ReplicaID: "a", Flush: 10 * time.Millisecond}, slog.New(slog.DiscardHandler))
		go func() { defer close(done); d.run(ctx) }()
	} else {
		d.enableShare(nil, DirectoryOptions{ReplicaID: "a"}, slog.New(slog.DiscardHandler))
		close(done)
	}
	cb := d.callbacks()
	for i, id := range nodes {
		node := omniNode(id)
		cb.OnStreamOpen(int64(i+1), node)
		for _, typ := range ackTypes {
			cb.OnAck(int64(i+1), node, typ, "v1")
		}
	}
	if shared {
		testutil.Eventually(b, 30*time.Second, 20*time.Millisecond, "every stream written", func() (bool, string) {
			d.mu.Lock()
			defer d.mu.Unlock()
			for _, p := range d.streams {
				if p.rev == 0 {
					return false, "unwritten streams"
				}
			}
			return true, ""
		})
	}
	after := liveHeap()
	runtime.KeepAlive(d)
	runtime.KeepAlive(nodes)
	cancel()
	<-done
	return float64(after-before) / float64(n)
}
