package meshkit

import (
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
// streams run concurrently: hence the lock). It is per replica: a node is
// listed by the replica it is connected to.
type proxyDirectory struct {
	mu       sync.Mutex
	streams  map[int64]*ProxyStatus
	withheld map[string][]capfilter.Withheld
	exts     map[string][]config.ExtensionChoice
	metrics  *metrics
}

// ProxyStatus is one connected xDS stream as the operator sees it.
type ProxyStatus struct {
	NodeID         string
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
		streams:  map[int64]*ProxyStatus{},
		withheld: map[string][]capfilter.Withheld{},
		exts:     map[string][]config.ExtensionChoice{},
	}
}

func (d *proxyDirectory) callbacks() xdsserver.Callbacks {
	return xdsserver.Callbacks{
		OnStreamOpen: func(id int64, node *corev3.Node) {
			k := groupOf(node)
			d.metrics.stream(string(k.caps.Kind), 1)
			d.mu.Lock()
			d.streams[id] = &ProxyStatus{
				NodeID: node.GetId(), Cluster: node.GetCluster(), Caps: k.caps, Bucket: k.bucket,
				Group:          k.name(),
				ConnectedSince: time.Now(), Acked: map[string]string{},
			}
			d.mu.Unlock()
		},
		OnStreamClose: func(id int64, _ *corev3.Node) {
			d.mu.Lock()
			if p := d.streams[id]; p != nil {
				d.metrics.stream(string(p.Caps.Kind), -1)
			}
			delete(d.streams, id)
			d.mu.Unlock()
		},
		OnAck: func(id int64, _ *corev3.Node, typeURL, version string) {
			d.metrics.ack(typeURL, true)
			d.mu.Lock()
			if p := d.streams[id]; p != nil {
				p.Acked[typeURL] = version
			}
			d.mu.Unlock()
		},
		OnNack: func(id int64, _ *corev3.Node, typeURL, version, detail string) {
			d.metrics.ack(typeURL, false)
			d.mu.Lock()
			if p := d.streams[id]; p != nil {
				p.LastNack = &Nack{TypeURL: typeURL, Version: version, Detail: detail, At: time.Now()}
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
	d.mu.Unlock()
}

// list returns a copy of every connected stream, sorted by node id.
func (d *proxyDirectory) list() []ProxyStatus {
	d.mu.Lock()
	out := make([]ProxyStatus, 0, len(d.streams))
	for _, p := range d.streams {
		c := *p
		c.Acked = make(map[string]string, len(p.Acked))
		for k, v := range p.Acked {
			c.Acked[k] = v
		}
		c.Withheld = append([]capfilter.Withheld(nil), d.withheld[p.Group]...)
		c.Extensions = append([]config.ExtensionChoice(nil), d.exts[p.Group]...)
		out = append(out, c)
	}
	d.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].NodeID != out[j].NodeID {
			return out[i].NodeID < out[j].NodeID
		}
		return out[i].ConnectedSince.Before(out[j].ConnectedSince)
	})
	return out
}

// Proxies lists the nodes connected to this replica.
func (m *MeshKit) Proxies() []ProxyStatus { return m.proxies.list() }

// setExtensions records what a group's proxies run, per extension entry.
func (d *proxyDirectory) setExtensions(group string, x []config.ExtensionChoice) {
	d.mu.Lock()
	if len(x) == 0 {
		delete(d.exts, group)
	} else {
		d.exts[group] = x
	}
	d.mu.Unlock()
}
