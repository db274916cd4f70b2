package meshkit

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/omnirelay/omnirelay/internal/controlplane/capfilter"
	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// Directory lists the nodes connected to every replica, each with the
// replica it is on, sorted by node id. On a store without leases (bbolt)
// that is Proxies. On etcd, this replica's streams come from memory and
// the others' from the store, read once per call (nothing of the other
// replicas is kept in memory between calls). A node listed by several
// replicas (it moved, and the replica it left has not yet deleted its
// entry, or died and its lease has not yet run out) is shown only on the
// replica whose entry for it was first written last: store revisions, not
// clocks, decide. If the store cannot be read, Directory returns this
// replica's streams and the error.
func (m *MeshKit) Directory(ctx context.Context) ([]ProxyStatus, error) {
	return m.proxies.all(ctx)
}

func (d *proxyDirectory) all(ctx context.Context) ([]ProxyStatus, error) {
	rows := d.local()
	if !d.sharing() {
		return sorted(rows), nil
	}
	remote, err := d.share.remote(ctx)
	if err != nil {
		return sorted(rows), err
	}
	return sorted(newestPerNode(append(rows, remote...))), nil
}

// remote reads the other replicas' entries.
func (sh *directoryShare) remote(ctx context.Context) ([]listed, error) {
	kvs, _, err := sh.st.List(ctx, DirectoryPrefix)
	if err != nil {
		return nil, fmt.Errorf("proxy directory: list other replicas: %w", err)
	}
	own := url.PathEscape(sh.opt.ReplicaID)
	type replicaGroup struct{ replica, group string }
	groups := map[replicaGroup]storedGroup{}
	var rows []listed
	for _, kv := range kvs {
		escReplica, tail, ok := strings.Cut(strings.TrimPrefix(kv.Key, DirectoryPrefix), "/")
		if !ok || escReplica == own {
			continue
		}
		replica, err := url.PathUnescape(escReplica)
		if err != nil {
			continue
		}
		kind, name, _ := strings.Cut(tail, "/")
		switch kind {
		case "s":
			var s storedStream
			if err := json.Unmarshal(kv.Value, &s); err != nil {
				sh.log.Warn("proxy directory: undecodable entry skipped", "key", kv.Key, "error", err)
				continue
			}
			rev := s.Rev
			if rev == 0 {
				rev = kv.Revision // its first write
			}
			if s.Acked == nil {
				s.Acked = map[string]string{}
			}
			rows = append(rows, listed{rev: rev, ProxyStatus: ProxyStatus{
				NodeID: s.Node, Replica: replica, Cluster: s.Cluster, Group: s.Group,
				ConnectedSince: s.Since, Acked: s.Acked, LastNack: s.Nack, Bucket: s.Bucket,
			}})
		case "g":
			group, err := url.PathUnescape(name)
			if err != nil {
				continue
			}
			var g storedGroup
			if err := json.Unmarshal(kv.Value, &g); err != nil {
				sh.log.Warn("proxy directory: undecodable entry skipped", "key", kv.Key, "error", err)
				continue
			}
			groups[replicaGroup{replica, group}] = g
		}
	}
	for i := range rows {
		g := groups[replicaGroup{rows[i].Replica, rows[i].Group}]
		rows[i].Caps = g.Caps
		rows[i].Withheld = append([]capfilter.Withheld(nil), g.Withheld...)
		rows[i].Extensions = append([]config.ExtensionChoice(nil), g.Extensions...)
	}
	return rows, nil
}

// newestPerNode keeps, for each node id, the rows of the one replica whose
// entry for it has the highest first-write revision (ties: the smaller
// replica id, so that every replica picks the same).
func newestPerNode(rows []listed) []listed {
	type pick struct {
		replica string
		rev     int64
	}
	best := make(map[string]pick, len(rows))
	for _, r := range rows {
		b, ok := best[r.NodeID]
		if !ok || r.rev > b.rev || (r.rev == b.rev && r.Replica < b.replica) {
			best[r.NodeID] = pick{r.Replica, r.rev}
		}
	}
	out := rows[:0]
	for _, r := range rows {
		if best[r.NodeID].replica == r.Replica {
			out = append(out, r)
		}
	}
	return out
}
