package resources

import (
	"errors"
	"fmt"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// Validate checks that the snapshot is complete and consistent: every
// resource passes its generated ValidateAll (Any payloads included), names
// are non-empty and unique per type, and every reference resolves
// (HCM rds name -> Routes, route cluster -> Clusters, tcp_proxy cluster ->
// Clusters, EDS cluster -> Endpoints, static SDS secret name -> Secrets).
// All problems are reported, joined; each names its resource and field path.
func (s *Snapshot) Validate() error {
	var errs []error
	idx := index{
		routes:    map[string]bool{},
		clusters:  map[string]bool{},
		endpoints: map[string]bool{},
		secrets:   map[string]bool{},
	}
	listeners := map[string]bool{}
	for i, l := range s.Listeners {
		errs = append(errs, checkResource("listener", i, l.GetName(), l, listeners)...)
	}
	for i, r := range s.Routes {
		errs = append(errs, checkResource("route configuration", i, r.GetName(), r, idx.routes)...)
	}
	for i, c := range s.Clusters {
		errs = append(errs, checkResource("cluster", i, c.GetName(), c, idx.clusters)...)
	}
	for i, e := range s.Endpoints {
		errs = append(errs, checkResource("cluster load assignment", i, e.GetClusterName(), e, idx.endpoints)...)
	}
	for i, sec := range s.Secrets {
		errs = append(errs, checkResource("secret", i, sec.GetName(), sec, idx.secrets)...)
	}

	for _, l := range s.Listeners {
		errs = append(errs, prefix(fmt.Sprintf("listener %q", l.GetName()), idx.listener(l))...)
	}
	for _, r := range s.Routes {
		errs = append(errs, prefix(fmt.Sprintf("route configuration %q", r.GetName()), idx.routeConfig(r, ""))...)
	}
	for _, c := range s.Clusters {
		errs = append(errs, prefix(fmt.Sprintf("cluster %q", c.GetName()), idx.cluster(c))...)
	}
	return errors.Join(errs...)
}

type index struct {
	routes, clusters, endpoints, secrets map[string]bool
}

func checkResource(kind string, i int, name string, m proto.Message, seen map[string]bool) []error {
	label := fmt.Sprintf("%s %q", kind, name)
	if name == "" {
		return []error{fmt.Errorf("%s [%d]: name is empty", kind, i)}
	}
	var errs []error
	if seen[name] {
		errs = append(errs, fmt.Errorf("%s: name is used twice", label))
	}
	seen[name] = true
	if v, ok := m.(validatorAll); ok {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", label, err))
		}
	}
	return append(errs, prefix(label, validateNested(m.ProtoReflect(), ""))...)
}

func prefix(label string, errs []error) []error {
	for i, err := range errs {
		errs[i] = fmt.Errorf("%s: %w", label, err)
	}
	return errs
}

func (x index) listener(l *listenerv3.Listener) []error {
	var errs []error
	chains := l.GetFilterChains()
	for i, fc := range chains {
		errs = append(errs, x.filterChain(fc, "filter_chains["+strconv.Itoa(i)+"]")...)
	}
	if fc := l.GetDefaultFilterChain(); fc != nil {
		errs = append(errs, x.filterChain(fc, "default_filter_chain")...)
	}
	if al := l.GetApiListener().GetApiListener(); al != nil {
		errs = append(errs, x.networkFilter(al, "api_listener.api_listener")...)
	}
	return append(errs, x.secretRefs(l.ProtoReflect())...)
}

func (x index) filterChain(fc *listenerv3.FilterChain, path string) []error {
	var errs []error
	for j, f := range fc.GetFilters() {
		p := fmt.Sprintf("%s.filters[%d]", path, j)
		if f.GetName() != "" {
			p += " (" + f.GetName() + ")"
		}
		if tc := f.GetTypedConfig(); tc != nil {
			errs = append(errs, x.networkFilter(tc, p)...)
		}
	}
	return errs
}

// networkFilter checks the references of the network filters that carry
// them; other filter types have none the snapshot could resolve.
func (x index) networkFilter(a *anypb.Any, path string) []error {
	m, err := unpack(a)
	if err != nil || m == nil {
		return nil // reported by validateNested
	}
	switch f := m.(type) {
	case *hcmv3.HttpConnectionManager:
		switch rs := f.GetRouteSpecifier().(type) {
		case *hcmv3.HttpConnectionManager_Rds:
			if name := rs.Rds.GetRouteConfigName(); !x.routes[name] {
				return []error{fmt.Errorf("%s: rds.route_config_name: unknown route configuration %q", path, name)}
			}
		case *hcmv3.HttpConnectionManager_RouteConfig:
			return x.routeConfig(rs.RouteConfig, path+": route_config")
		}
	case *tcpv3.TcpProxy:
		var errs []error
		switch cs := f.GetClusterSpecifier().(type) {
		case *tcpv3.TcpProxy_Cluster:
			if !x.clusters[cs.Cluster] {
				errs = append(errs, fmt.Errorf("%s: cluster: unknown cluster %q", path, cs.Cluster))
			}
		case *tcpv3.TcpProxy_WeightedClusters:
			for i, wc := range cs.WeightedClusters.GetClusters() {
				if !x.clusters[wc.GetName()] {
					errs = append(errs, fmt.Errorf("%s: weighted_clusters.clusters[%d].name: unknown cluster %q", path, i, wc.GetName()))
				}
			}
		}
		return errs
	}
	return nil
}

func (x index) routeConfig(rc *routev3.RouteConfiguration, path string) []error {
	var errs []error
	for i, vh := range rc.GetVirtualHosts() {
		for j, r := range vh.GetRoutes() {
			p := join(path, fmt.Sprintf("virtual_hosts[%d].routes[%d].route", i, j))
			ra := r.GetRoute()
			if ra == nil {
				continue
			}
			switch cs := ra.GetClusterSpecifier().(type) {
			case *routev3.RouteAction_Cluster:
				if !x.clusters[cs.Cluster] {
					errs = append(errs, fmt.Errorf("%s.cluster: unknown cluster %q", p, cs.Cluster))
				}
			case *routev3.RouteAction_WeightedClusters:
				for k, wc := range cs.WeightedClusters.GetClusters() {
					if !x.clusters[wc.GetName()] {
						errs = append(errs, fmt.Errorf("%s.weighted_clusters.clusters[%d].name: unknown cluster %q", p, k, wc.GetName()))
					}
				}
			}
			for k, mp := range ra.GetRequestMirrorPolicies() {
				if c := mp.GetCluster(); c != "" && !x.clusters[c] {
					errs = append(errs, fmt.Errorf("%s.request_mirror_policies[%d].cluster: unknown cluster %q", p, k, c))
				}
			}
		}
	}
	return errs
}

func (x index) cluster(c *clusterv3.Cluster) []error {
	var errs []error
	if c.GetType() == clusterv3.Cluster_EDS {
		name := c.GetEdsClusterConfig().GetServiceName()
		if name == "" {
			name = c.GetName()
		}
		if !x.endpoints[name] {
			errs = append(errs, fmt.Errorf("eds_cluster_config: no cluster load assignment named %q", name))
		}
	}
	return append(errs, x.secretRefs(c.ProtoReflect())...)
}

var sdsSecretConfigName = (&tlsv3.SdsSecretConfig{}).ProtoReflect().Descriptor().FullName()

// secretRefs checks that every SDS reference without its own config source
// (a static secret, in Envoy's terms) names a secret of the snapshot.
func (x index) secretRefs(m protoreflect.Message) []error {
	var errs []error
	var visit func(m protoreflect.Message, path string)
	visit = func(m protoreflect.Message, path string) {
		eachMessage(m, path, func(fm protoreflect.Message, p string) bool {
			switch fm.Descriptor().FullName() {
			case sdsSecretConfigName:
				sc, ok := fm.Interface().(*tlsv3.SdsSecretConfig)
				if ok && sc.GetSdsConfig() == nil && !x.secrets[sc.GetName()] {
					errs = append(errs, fmt.Errorf("%s.name: unknown secret %q", p, sc.GetName()))
				}
				return false
			case anyFullName:
				inner, err := unpack(asAny(fm))
				if err == nil && inner != nil {
					visit(inner.ProtoReflect(), p+"("+string(inner.ProtoReflect().Descriptor().FullName())+")")
				}
				return false
			}
			return true
		})
	}
	visit(m, "")
	return errs
}
