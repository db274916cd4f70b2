package translate

import (
	"fmt"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/shared/capability"
	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
)

// ForGRPC validates c and returns the resources a gRPC proxyless client
// needs (the shapes gRPC's xDS resolver accepts, docs/xds-shapes.md). A
// client dialing "xds:///D" asks for the Listener named D, so for every
// non-wildcard domain D of an HTTP listener's virtual hosts there is a
// Listener named exactly D (port included, if the domain has one) whose
// api_listener is an HttpConnectionManager fetching the listener's
// RouteConfiguration over RDS (config_source ads), with its HTTP filters,
// the router last. Every cluster the routes use is EDS (ads); lb_policy is
// ROUND_ROBIN, or RING_HASH/LEAST_REQUEST where configured (gRPC has no
// random or maglev). Load assignments give every locality an ID and a
// non-zero load_balancing_weight, and number priorities from 0 without gaps,
// which gRPC requires.
//
// gRPC runs few HTTP filters (capability.Default(capability.KindGRPC)). An
// optional filter it lacks is dropped with its per-route configs; a
// required one withholds that listener's Listeners, and a domain already
// served by an earlier listener is withheld from the later one. Each is
// reported to o.OnWithheld; neither is an error. o.ADS is ignored (the
// shape is always ADS).
//
// Clusters keep no transport socket: a gRPC client takes upstream TLS from
// its own xDS channel credentials, and gRPC rejects Envoy's file-based TLS
// contexts.
func ForGRPC(c *config.Config, o Options) (*resources.Snapshot, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	t := &translator{cfg: c, opts: Options{ADS: true, ServiceEndpoints: o.ServiceEndpoints}}
	withhold := func(w Withheld) {
		if o.OnWithheld != nil {
			o.OnWithheld(w)
		}
	}
	caps := capability.Default(capability.KindGRPC)
	snap := &resources.Snapshot{}
	owner := map[string]string{} // domain -> listener serving it
	used := map[string]bool{}    // clusters the emitted routes use
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if p := l.EffectiveProtocol(); p != config.ProtocolHTTP && p != config.ProtocolHTTPS {
			continue
		}
		domains := exactDomains(l)
		if len(domains) == 0 {
			continue
		}
		filters, cors, err := t.httpFilters(l)
		if err != nil {
			return nil, fmt.Errorf("translate listener %q: %w", l.Name, err)
		}
		kept, dropped, missing := grpcHTTPFilters(filters, caps)
		if missing != "" {
			for _, d := range domains {
				withhold(Withheld{TypeURL: resource.ListenerType, Name: d, Reason: fmt.Sprintf(
					"listener %q requires filter %s which gRPC proxyless clients lack (mark it optional to drop it for them)", l.Name, missing)})
			}
			continue
		}
		rc, err := t.routeConfig(l, cors)
		if err != nil {
			return nil, fmt.Errorf("translate listener %q: %w", l.Name, err)
		}
		stripFilterConfigs(rc, dropped)
		hcm, err := typed(&hcmv3.HttpConnectionManager{
			StatPrefix:     l.Name,
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: rds(rc.Name)},
			HttpFilters:    kept,
		})
		if err != nil {
			return nil, fmt.Errorf("translate listener %q: %w", l.Name, err)
		}
		emitted := false
		for _, d := range domains {
			if prev, dup := owner[d]; dup {
				withhold(Withheld{TypeURL: resource.ListenerType, Name: d, Reason: fmt.Sprintf(
					"listener %q also serves domain %s; gRPC clients get listener %q's routes", l.Name, d, prev)})
				continue
			}
			owner[d] = l.Name
			snap.Listeners = append(snap.Listeners, &listenerv3.Listener{
				Name:        d,
				ApiListener: &listenerv3.ApiListener{ApiListener: hcm},
			})
			emitted = true
		}
		if emitted {
			snap.Routes = append(snap.Routes, rc)
			routeClusters(rc, used)
		}
	}
	for i := range c.Clusters {
		cc := &c.Clusters[i]
		if !used[cc.Name] {
			continue
		}
		cl, cla, err := t.grpcCluster(cc)
		if err != nil {
			return nil, fmt.Errorf("translate cluster %q: %w", cc.Name, err)
		}
		snap.Clusters = append(snap.Clusters, cl)
		snap.Endpoints = append(snap.Endpoints, cla)
	}
	if err := snap.Validate(); err != nil {
		return nil, fmt.Errorf("translate: generated gRPC resources are invalid: %w", err)
	}
	return snap, nil
}

// exactDomains lists, in order and once each, the domains of l's virtual
// hosts that a gRPC target can name: those without a wildcard.
func exactDomains(l *config.Listener) []string {
	var out []string
	for _, vh := range l.VirtualHosts {
		for _, d := range vh.EffectiveDomains() {
			if !strings.Contains(d, "*") && !slices.Contains(out, d) {
				out = append(out, d)
			}
		}
	}
	return out
}

// grpcHTTPFilters splits an HCM filter list into what a gRPC client keeps
// and the names of the optional filters it drops; missing is the first
// required filter it cannot run ("" when none).
func grpcHTTPFilters(fs []*hcmv3.HttpFilter, caps capability.Set) (kept []*hcmv3.HttpFilter, dropped map[string]bool, missing string) {
	for _, f := range fs {
		switch {
		case caps.Has(f.GetName()):
			kept = append(kept, f)
		case f.GetIsOptional():
			if dropped == nil {
				dropped = map[string]bool{}
			}
			dropped[f.GetName()] = true
		default:
			return nil, nil, f.GetName()
		}
	}
	return kept, dropped, ""
}

// stripFilterConfigs removes the per-virtual-host, per-route and
// per-weighted-cluster configs of dropped filters: a client that lacks the
// filter would reject its config as well.
func stripFilterConfigs(rc *routev3.RouteConfiguration, dropped map[string]bool) {
	if len(dropped) == 0 {
		return
	}
	strip := func(m map[string]*anypb.Any) {
		for name := range m {
			if dropped[name] {
				delete(m, name)
			}
		}
	}
	strip(rc.GetTypedPerFilterConfig())
	for _, vh := range rc.GetVirtualHosts() {
		strip(vh.GetTypedPerFilterConfig())
		for _, r := range vh.GetRoutes() {
			strip(r.GetTypedPerFilterConfig())
			for _, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
				strip(wc.GetTypedPerFilterConfig())
			}
		}
	}
}

// routeClusters adds the clusters rc's routes send or mirror to.
func routeClusters(rc *routev3.RouteConfiguration, used map[string]bool) {
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			ra := r.GetRoute()
			if c := ra.GetCluster(); c != "" {
				used[c] = true
			}
			for _, wc := range ra.GetWeightedClusters().GetClusters() {
				used[wc.GetName()] = true
			}
			for _, mp := range ra.GetRequestMirrorPolicies() {
				used[mp.GetCluster()] = true
			}
		}
	}
}

// grpcCluster is the Envoy cluster cut down to what gRPC reads: EDS over
// ADS, its lb policy, ring size, circuit breakers and outlier detection.
// gRPC resolves host names in EDS addresses itself, so DNS clusters become
// EDS too.
func (t *translator) grpcCluster(c *config.Cluster) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, error) {
	full, cla, err := t.cluster(c)
	if err != nil {
		return nil, nil, err
	}
	if cla == nil {
		cla = full.GetLoadAssignment()
	}
	out := &clusterv3.Cluster{
		Name:                 full.GetName(),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		ConnectTimeout:       full.GetConnectTimeout(),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		CircuitBreakers:      full.GetCircuitBreakers(),
		OutlierDetection:     full.GetOutlierDetection(),
	}
	switch full.GetLbPolicy() {
	case clusterv3.Cluster_RING_HASH:
		out.LbPolicy = clusterv3.Cluster_RING_HASH
		out.LbConfig = full.GetLbConfig()
	case clusterv3.Cluster_LEAST_REQUEST:
		out.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	}
	return out, grpcLoadAssignment(cla), nil
}

// grpcLoadAssignment gives every locality an ID (gRPC rejects a locality
// without one) and renumbers priorities densely from 0, keeping their
// order (gRPC rejects a gap). Weights are already set by loadAssignment.
func grpcLoadAssignment(cla *endpointv3.ClusterLoadAssignment) *endpointv3.ClusterLoadAssignment {
	var prios []uint32
	for _, g := range cla.GetEndpoints() {
		if !slices.Contains(prios, g.GetPriority()) {
			prios = append(prios, g.GetPriority())
		}
	}
	slices.Sort(prios)
	for _, g := range cla.GetEndpoints() {
		if g.Locality == nil {
			g.Locality = &corev3.Locality{}
		}
		g.Priority = uint32(slices.Index(prios, g.GetPriority()))
	}
	return cla
}
