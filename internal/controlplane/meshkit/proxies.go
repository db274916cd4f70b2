package meshkit

import (
	"math"
	"sort"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/omnirelay/omnirelay/internal/controlplane/capfilter"
	"github.com/omnirelay/omnirelay/internal/controlplane/xdsserver"
	"github.com/omnirelay/omnirelay/internal/shared/capability"
	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// proxyDirectory records what each connected node is, what it ACKed and
// NACKed, and what its group had withheld. It is fed by the xDS server's
// callbacks (one stream's callbacks come from that stream's goroutine,
// streams run concurrently: hence the lock). It holds the nodes connected
// to this replica; on a store with leases (etcd) it also publishes them
// for the other replicas to list (directory_share.go).
type proxyDirectory struct {
	mu       sync.Mutex
	streams  map[int64]*streamEntry
	withheld map[string][]capfilter.Withheld
	exts     map[string][]config.ExtensionChoice
	// groupCaps is each group's capability set, recorded by its first
	// stream (a group's nodes share one).
	groupCaps map[string]capability.Set
	metrics   *metrics

	// share is nil on a store without leases (bbolt: one replica, the
	// directory stays in memory).
	share *directoryShare
}

// streamEntry is one connected stream: what a ProxyStatus shows of it
// less what is the same for its whole group or replica (withheld,
// extensions, replica: filled in by listings), plus what sharing it needs.
// Held for every connected client, so kept lean.
type streamEntry struct {
	NodeID, Cluster, Group string
	Caps                   capability.Set
	ConnectedSince         time.Time
	Acked                  map[string]string // type URL -> version
	LastNack               *Nack
	Bucket                 uint32
	// sent says the entry was in a write: closing the stream must delete
	// its key.
	sent bool
	// rev is the store revision of the first write of this stream's entry
	// (0 until written): listings order one node's entries on several
	// replicas by it.
	rev int64
}

// ProxyStatus is one connected xDS stream as the operator sees it.
type ProxyStatus struct {
	NodeID string
	// Replica is the MeshKit replica the stream is connected to.
	Replica        string
	Cluster        string
	Caps           capability.Set
	Group          string
	ConnectedSince time.Time
	Acked          map[string]string // type URL -> version
	LastNack       *Nack
	Withheld       []capfilter.Withheld
	// Bucket is the node's canary bucket (OmniRelay nodes): it runs the
	// new package of a canary by proxies at P% when Bucket < P.
	Bucket uint32
	// Extensions is the package each extension entry runs on this node
	// (its group's last built snapshot).
	Extensions []config.ExtensionChoice
}

// Nack is the last rejection a node reported.
type Nack struct {
	TypeURL, Version, Detail string
	At                       time.Time
}

func newProxyDirectory() *proxyDirectory {
	return &proxyDirectory{
		streams:  map[int64]*streamEntry{},
		withheld: map[string][]capfilter.Withheld{},
		exts:     map[string][]config.ExtensionChoice{},

		groupCaps: map[string]capability.Set{},
	}
}

func (d *proxyDirectory) callbacks() xdsserver.Callbacks {
	return xdsserver.Callbacks{
		OnStreamOpen: func(id int64, node *corev3.Node) {
			k := groupOf(node)
			d.metrics.stream(string(k.caps.Kind), 1)
			g := k.name()
			d.mu.Lock()
			d.streams[id] = &streamEntry{
				NodeID: node.GetId(), Cluster: node.GetCluster(), Caps: k.caps, Bucket: k.bucket,
				Group:          g,
				ConnectedSince: time.Now(), Acked: map[string]string{},
			}
			if _, ok := d.groupCaps[g]; !ok {
				d.groupCaps[g] = k.caps
				d.groupChangedLocked(g)
			}
			d.changedLocked(id)
			d.mu.Unlock()
		},
		OnStreamClose: func(id int64, _ *corev3.Node) {
			d.mu.Lock()
			p := d.streams[id]
			if p != nil {
				d.metrics.stream(string(p.Caps.Kind), -1)
			}
			delete(d.streams, id)
			if p != nil {
				d.closedLocked(id, p.sent)
			}
			d.mu.Unlock()
		},
		OnAck: func(id int64, _ *corev3.Node, typeURL, version string) {
			d.metrics.ack(typeURL, true)
			d.mu.Lock()
			if p := d.streams[id]; p != nil && p.Acked[typeURL] != version {
				p.Acked[typeURL] = version
				d.changedLocked(id)
			}
			d.mu.Unlock()
		},
		OnNack: func(id int64, _ *corev3.Node, typeURL, version, detail string) {
			d.metrics.ack(typeURL, false)
			d.mu.Lock()
			if p := d.streams[id]; p != nil {
				p.LastNack = &Nack{TypeURL: typeURL, Version: version, Detail: detail, At: time.Now()}
				d.changedLocked(id)
			}
			d.mu.Unlock()
		},
	}
}

func (d *proxyDirectory) setWithheld(group string, w []capfilter.Withheld) {
	d.mu.Lock()
	if len(w) == 0 {
		delete(d.withheld, group)
	} else {
		d.withheld[group] = w
	}
	d.groupChangedLocked(group)
	d.mu.Unlock()
}

// setExtensions records what a group's proxies run, per extension entry.
func (d *proxyDirectory) setExtensions(group string, x []config.ExtensionChoice) {
	d.mu.Lock()
	if len(x) == 0 {
		delete(d.exts, group)
	} else {
		d.exts[group] = x
	}
	d.groupChangedLocked(group)
	d.mu.Unlock()
}

// listed is a listing row and the revision that orders it against the same
// node's rows on other replicas.
type listed struct {
	ProxyStatus
	rev int64
}

// local returns a copy of every stream connected to this replica. A stream
// not yet written to the store is newer than anything stored.
func (d *proxyDirectory) local() []listed {
	replica := d.replica()
	d.mu.Lock()
	out := make([]listed, 0, len(d.streams))
	for _, p := range d.streams {
		c := ProxyStatus{
			NodeID: p.NodeID, Replica: replica, Cluster: p.Cluster, Caps: p.Caps, Group: p.Group,
			ConnectedSince: p.ConnectedSince, LastNack: p.LastNack, Bucket: p.Bucket,
		}
		c.Acked = make(map[string]string, len(p.Acked))
		for k, v := range p.Acked {
			c.Acked[k] = v
		}
		c.Withheld = append([]capfilter.Withheld(nil), d.withheld[p.Group]...)
		c.Extensions = append([]config.ExtensionChoice(nil), d.exts[p.Group]...)
		rev := p.rev
		if rev == 0 {
			rev = math.MaxInt64
		}
		out = append(out, listed{ProxyStatus: c, rev: rev})
	}
	d.mu.Unlock()
	return out
}

// sorted orders rows by node id, then replica, then connection time.
func sorted(rows []listed) []ProxyStatus {
	sort.Slice(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if a.NodeID != b.NodeID {
			return a.NodeID < b.NodeID
		}
		if a.Replica != b.Replica {
			return a.Replica < b.Replica
		}
		return a.ConnectedSince.Before(b.ConnectedSince)
	})
	out := make([]ProxyStatus, len(rows))
	for i := range rows {
		out[i] = rows[i].ProxyStatus
	}
	return out
}

// Proxies lists the nodes connected to this replica, sorted by node id.
// Directory lists those of every replica.
func (m *MeshKit) Proxies() []ProxyStatus { return sorted(m.proxies.local()) }
