package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/omnirelay/omnirelay/internal/controlplane/store"
)

// NodeRecords lists every node record and the store revision the listing
// reflects, for WatchNodeRecords.
func (s *Service) NodeRecords(ctx context.Context) ([]Node, int64, error) {
	kvs, rev, err := s.st.List(ctx, nodePrefix)
	if err != nil {
		return nil, 0, fmt.Errorf("list nodes: %w", err)
	}
	out := make([]Node, 0, len(kvs))
	for _, kv := range kvs {
		n, err := decodeNode(kv)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, n)
	}
	return out, rev, nil
}

// NodeChange is one change of a node record.
type NodeChange struct {
	NodeID string
	// Deleted: the record is gone; Node is then zero.
	Deleted bool
	Node    Node
}

// WatchNodeRecords sends the changes of node records after afterRev, on
// this replica or any other sharing the store, with store.Watch's contract:
// the channel closes when ctx ends or the watch is lost, and the caller then
// lists (NodeRecords) and watches again. A record that does not decode is
// reported with its node id and a zero Node (Revoked false, no SPIFFE ID),
// which no stream's certificate matches. It starts one goroutine, which
// ends with the store's channel.
func (s *Service) WatchNodeRecords(ctx context.Context, afterRev int64) <-chan []NodeChange {
	in := s.st.Watch(ctx, nodePrefix, afterRev)
	out := make(chan []NodeChange)
	go func() {
		defer close(out)
		for batch := range in {
			changes := make([]NodeChange, 0, len(batch))
			for _, ev := range batch {
				id := strings.TrimPrefix(ev.KV.Key, nodePrefix)
				ch := NodeChange{NodeID: id, Deleted: ev.Type == store.EventDelete}
				if !ch.Deleted {
					if n, err := decodeNode(ev.KV); err == nil {
						ch.Node = n
					} else {
						s.log.Warn("identity: node record does not decode", "node", id, "error", err)
					}
				}
				changes = append(changes, ch)
			}
			select {
			case out <- changes:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func decodeNode(kv store.KV) (Node, error) {
	var n Node
	if err := json.Unmarshal(kv.Value, &n); err != nil {
		return Node{}, fmt.Errorf("node record %s: %w", kv.Key, err)
	}
	if n.NodeID == "" {
		n.NodeID = strings.TrimPrefix(kv.Key, nodePrefix)
	}
	return n, nil
}
