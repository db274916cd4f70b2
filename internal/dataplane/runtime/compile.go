package runtime

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"github.com/omnirelay/omnirelay/internal/dataplane/cluster"
	"github.com/omnirelay/omnirelay/internal/dataplane/secrets"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
)

// compile is the one step that turns a snapshot into a Version: it
// validates snap, parses its secrets, builds its clusters and compiles every
// listener (filter chains, HTTP filters, route tables, TCP proxies) against
// those clusters. id is snap.Hash(), which the caller has already computed
// to drop an unchanged snapshot.
//
// A cluster whose resource and load assignment equal those of the cluster of
// the same name in prev (the running version, or nil) is carried over as the
// same object, with its health and outlier state and its pools; a changed
// one is built from prev's (cluster.Build keeps what still applies).
//
// compile binds no socket and publishes nothing: what runs is untouched
// whether it succeeds or fails. Its error names the resource ("listener
// \"web\": filter_chains[0]: ...", "cluster \"api\": ..."). The version it
// returns owns the clusters it built (their health checkers run): the
// caller publishes it or discards it. The caller holds rt.mu (access-log
// files are shared between versions through rt.logFiles).
func (rt *Runtime) compile(snap *resources.Snapshot, id, source string, prev *Version) (*Version, error) {
	if err := snap.Validate(); err != nil {
		return nil, err
	}
	v := &Version{ID: id, Source: source, Resources: snap,
		clusterProtos: make(map[string]*clusterv3.Cluster, len(snap.Clusters)),
		claProtos:     make(map[string]*endpointv3.ClusterLoadAssignment, len(snap.Clusters))}
	var err error
	if v.secrets, err = secrets.ParseSnapshot(snap.Secrets); err != nil {
		return nil, err
	}
	if err := rt.compileClusters(snap, prev, v); err != nil {
		return nil, err
	}
	if v.Listeners, err = rt.compileListeners(snap, v); err != nil {
		v.discard()
		return nil, err
	}
	return v, nil
}

// compileClusters sets v.Clusters: the clusters of snap, carried over from
// prev when unchanged, else built. On error the clusters built so far are
// closed.
func (rt *Runtime) compileClusters(snap *resources.Snapshot, prev *Version, v *Version) error {
	clas := make(map[string]*endpointv3.ClusterLoadAssignment, len(snap.Endpoints))
	for _, e := range snap.Endpoints {
		clas[e.GetClusterName()] = e
	}
	all := make([]*cluster.Cluster, 0, len(snap.Clusters))
	for _, c := range snap.Clusters {
		name := c.GetName()
		// An EDS cluster's assignment is named by its service_name when it
		// has one (several clusters may share an assignment), else by the
		// cluster's name, as Envoy and resources.Validate resolve it.
		claName := name
		if sn := c.GetEdsClusterConfig().GetServiceName(); sn != "" {
			claName = sn
		}
		cla := clas[claName]
		v.clusterProtos[name] = c
		v.claProtos[name] = cla
		var old *cluster.Cluster
		if prev != nil {
			old = prev.Clusters.Get(name)
			if old != nil && proto.Equal(prev.clusterProtos[name], c) && proto.Equal(prev.claProtos[name], cla) {
				all = append(all, old)
				continue
			}
		}
		nc, err := cluster.Build(c, cla, old, rt.opt.Cluster)
		if err != nil {
			for _, b := range v.built {
				b.Close()
			}
			v.built = nil
			return err
		}
		v.built = append(v.built, nc)
		all = append(all, nc)
	}
	v.Clusters = cluster.NewSet(all)
	return nil
}

// discard closes the clusters v built, for a version that will not be
// published; the ones carried over belong to the running version.
func (v *Version) discard() {
	for _, c := range v.built {
		c.Close()
	}
	v.built = nil
}

// published stamps v as the running version.
func (v *Version) published(at time.Time) {
	v.AppliedAt = at
	v.built = nil // from now on the clusters belong to the running version
}
