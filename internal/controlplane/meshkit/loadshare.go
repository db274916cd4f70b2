package meshkit

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"time"

	"github.com/omnirelay/omnirelay/internal/controlplane/loadstats"
	"github.com/omnirelay/omnirelay/internal/controlplane/rollout"
)

// KeyLoadPrefix is where each replica shares the load reports it received
// for the running rollout (proxies report to the replica they are
// connected to; the leader judges them all): one key per replica, the
// last window's per-second sums, rewritten every second.
const KeyLoadPrefix = "/rollout/load/"

// loadShareEvery is how often a replica shares its reports; a share older
// than loadShareStale is ignored (a replica gone).
const (
	loadShareEvery = time.Second
	loadShareStale = 5 * time.Second
)

type loadShare struct {
	Replica string             `json:"replica"`
	Tag     int64              `json:"tag"`
	At      time.Time          `json:"at"`
	Buckets []loadstats.Bucket `json:"buckets"`
}

func (m *MeshKit) replicaID() string {
	if m.opt.Directory.ReplicaID == "" {
		return "meshkit"
	}
	return m.opt.Directory.ReplicaID
}

// shareLoads writes this replica's reports for the running rollout every
// second until ctx ends.
func (m *MeshKit) shareLoads(ctx context.Context) {
	key := KeyLoadPrefix + url.PathEscape(m.replicaID())
	t := time.NewTicker(loadShareEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		st := m.staged
		m.mu.Unlock()
		if st == nil {
			continue
		}
		now := time.Now()
		share := loadShare{Replica: m.replicaID(), Tag: st.id, At: now.UTC(), Buckets: m.loads.Buckets(st.id, now.Add(-2*rollout.MaxWindow))}
		if len(share.Buckets) == 0 {
			continue
		}
		val, err := json.Marshal(share)
		if err == nil {
			_, err = m.opt.Store.Put(ctx, key, val, -1)
		}
		if err != nil && ctx.Err() == nil {
			m.opt.Log.Warn("load reports not shared", "error", err)
		}
	}
}

// sharedLoads adds the other replicas' fresh shares for tag after since.
func (m *MeshKit) sharedLoads(ctx context.Context, tag int64, since time.Time, canary, stable *loadstats.Load) {
	kvs, _, err := m.opt.Store.List(ctx, KeyLoadPrefix)
	if err != nil {
		m.opt.Log.Warn("shared load reports not read; judging this replica's only", "error", err)
		return
	}
	own := KeyLoadPrefix + url.PathEscape(m.replicaID())
	for _, kv := range kvs {
		if kv.Key == own || !strings.HasPrefix(kv.Key, KeyLoadPrefix) {
			continue
		}
		var s loadShare
		if err := json.Unmarshal(kv.Value, &s); err != nil || s.Tag != tag || time.Since(s.At) > loadShareStale {
			continue
		}
		loadstats.SumBuckets(s.Buckets, since, canary, stable)
	}
}
