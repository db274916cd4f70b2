// Package capfilter cuts a translated snapshot down to what one xDS client
// can run, as its xDS Node declares it (docs/meshkit.md). MeshKit translates
// the desired config once per shape, then filters it per capability.Set (per
// Set fingerprint, so clients of one build share the result): an HTTP filter
// the client lacks is dropped when the config marked it optional, otherwise
// the listener that needs it is withheld, with everything only that listener
// used, and the operator is told why (Withheld).
//
// Only HTTP filters of HttpConnectionManagers are checked (in filter
// chains, the default chain and api_listener): they are where clients
// differ. Network filters, clusters and secrets pass as they are; secrets
// are never withheld, since working out which ones only a withheld
// listener uses would mean walking transport sockets inside Anys for
// little gain.
package capfilter

import (
	"fmt"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/shared/capability"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
	"github.com/omnirelay/omnirelay/internal/shared/translate"
)

// Withheld is a resource left out for one client, and why. It is the
// translate package's type, so that ForGRPC's and Filter's reports mix.
type Withheld = translate.Withheld

// Filter returns the part of s that a client with caps can run, and what
// it left out. s is not modified; resources Filter does not change are
// shared with it. A listener whose HCM cannot be decoded is withheld too:
// the client could not run it either.
func Filter(s *resources.Snapshot, caps capability.Set) (*resources.Snapshot, []Withheld) {
	if s == nil {
		return nil, nil
	}
	f := filterer{caps: caps, build: buildLabel(caps)}
	out := &resources.Snapshot{Secrets: s.Secrets}
	var withheld []Withheld
	kept, dropped := refs{}, refs{}
	for _, l := range s.Listeners {
		nl, reason := f.listener(l)
		if reason != "" {
			withheld = append(withheld, Withheld{TypeURL: resource.ListenerType, Name: l.GetName(), Reason: reason})
			dropped.listener(l)
			continue
		}
		out.Listeners = append(out.Listeners, nl)
		kept.listener(nl)
	}
	// Route configs first: their clusters join the reference sets.
	for _, rc := range s.Routes {
		name := rc.GetName()
		if dropped.routes[name] && !kept.routes[name] {
			withheld = append(withheld, onlyUsedBy(resource.RouteType, name))
			continue
		}
		nrc := f.routeConfig(rc)
		out.Routes = append(out.Routes, nrc)
		if kept.routes[name] || !dropped.routes[name] {
			kept.routeConfig(nrc)
		}
	}
	for _, rc := range s.Routes {
		if dropped.routes[rc.GetName()] && !kept.routes[rc.GetName()] {
			dropped.routeConfig(rc)
		}
	}
	for _, c := range s.Clusters {
		if dropped.clusters[c.GetName()] && !kept.clusters[c.GetName()] {
			withheld = append(withheld, onlyUsedBy(resource.ClusterType, c.GetName()))
			dropped.cluster(c)
			continue
		}
		out.Clusters = append(out.Clusters, c)
		kept.cluster(c)
	}
	for _, cla := range s.Endpoints {
		name := cla.GetClusterName()
		if dropped.endpoints[name] && !kept.endpoints[name] {
			withheld = append(withheld, onlyUsedBy(resource.EndpointType, name))
			continue
		}
		out.Endpoints = append(out.Endpoints, cla)
	}
	return out, withheld
}

func onlyUsedBy(typeURL, name string) Withheld {
	return Withheld{TypeURL: typeURL, Name: name, Reason: "used only by withheld listeners"}
}

func buildLabel(caps capability.Set) string {
	kind := string(caps.Kind)
	if kind == "" {
		kind = string(capability.KindUnknown)
	}
	if caps.Build == "" {
		return kind
	}
	return kind + " " + caps.Build
}

type filterer struct {
	caps  capability.Set
	build string
}

// has reports whether the client runs the filter, known by its name in
// the HCM or by the name its config type implies (clients match on the
// type; users may name a filter anything).
func (f filterer) has(name, typeURL string) bool {
	if f.caps.Has(name) {
		return true
	}
	canon := canonicalName(typeURL)
	if canon != "" && f.caps.Has(canon) {
		return true
	}
	// OmniRelay advertises its own filters (the extension filter) by config
	// type, and names each instance after its extension.
	return f.caps.Has(typeURL[strings.LastIndexByte(typeURL, '/')+1:])
}

// canonicalName derives Envoy's extension name from a filter config type:
// "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors" is
// "envoy.filters.http.cors". "" when the type follows no such pattern.
func canonicalName(typeURL string) string {
	full := typeURL[strings.LastIndexByte(typeURL, '/')+1:]
	for _, kind := range []string{"http", "network"} {
		p := "envoy.extensions.filters." + kind + "."
		if rest, ok := strings.CutPrefix(full, p); ok {
			if name, _, ok := strings.Cut(rest, "."); ok {
				return "envoy.filters." + kind + "." + name
			}
		}
	}
	return ""
}

// listener returns l as the client gets it (l itself when nothing
// changes), or the reason it is withheld.
func (f filterer) listener(l *listenerv3.Listener) (*listenerv3.Listener, string) {
	var out *listenerv3.Listener
	clone := func() *listenerv3.Listener {
		if out == nil {
			out = proto.CloneOf(l)
		}
		return out
	}
	// Indexes are stable between l and its clone, so the walk reads l and
	// writes the clone.
	check := func(a *anypb.Any, set func(*listenerv3.Listener, *anypb.Any)) string {
		if a.GetTypeUrl() != resource.APITypePrefix+"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" {
			return ""
		}
		na, reason := f.hcm(a)
		if reason == "" && na != a {
			set(clone(), na)
		}
		return reason
	}
	for i, fc := range l.GetFilterChains() {
		for j, nf := range fc.GetFilters() {
			if r := check(nf.GetTypedConfig(), func(c *listenerv3.Listener, a *anypb.Any) {
				c.FilterChains[i].Filters[j].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
			}); r != "" {
				return nil, r
			}
		}
	}
	for j, nf := range l.GetDefaultFilterChain().GetFilters() {
		if r := check(nf.GetTypedConfig(), func(c *listenerv3.Listener, a *anypb.Any) {
			c.DefaultFilterChain.Filters[j].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
		}); r != "" {
			return nil, r
		}
	}
	if a := l.GetApiListener().GetApiListener(); a != nil {
		if r := check(a, func(c *listenerv3.Listener, a *anypb.Any) { c.ApiListener.ApiListener = a }); r != "" {
			return nil, r
		}
	}
	if out == nil {
		return l, ""
	}
	return out, ""
}

// hcm returns the HCM config with the optional filters the client lacks
// removed (a itself when there are none), or why the client cannot run it.
func (f filterer) hcm(a *anypb.Any) (*anypb.Any, string) {
	m := &hcmv3.HttpConnectionManager{}
	if err := a.UnmarshalTo(m); err != nil {
		return nil, fmt.Sprintf("http_connection_manager does not decode: %v", err)
	}
	var keep []*hcmv3.HttpFilter
	changed := false
	for _, hf := range m.GetHttpFilters() {
		has, why := f.has(hf.GetName(), hf.GetTypedConfig().GetTypeUrl()), ""
		if has {
			why = f.extension(hf.GetTypedConfig()) // an extension the client cannot load
		}
		switch {
		case has && why == "":
			keep = append(keep, hf)
		case hf.GetIsOptional():
			changed = true
		case why != "":
			return nil, fmt.Sprintf("requires filter %s, %s", hf.GetName(), why)
		default:
			return nil, fmt.Sprintf("requires filter %s which node build %s lacks", hf.GetName(), f.build)
		}
	}
	if rc := m.GetRouteConfig(); rc != nil {
		if nrc := f.routeConfig(rc); nrc != rc {
			m.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: nrc}
			changed = true
		}
	}
	if !changed {
		return a, ""
	}
	m.HttpFilters = keep
	na, err := resources.NewAny(m)
	if err != nil {
		return nil, fmt.Sprintf("http_connection_manager does not encode: %v", err)
	}
	return na, ""
}

// routeConfig removes the per-filter configs of filters the client lacks:
// a client rejects a config it cannot decode, and the listeners it keeps
// have no such filter (or they would have been withheld). It returns rc
// itself when there are none.
func (f filterer) routeConfig(rc *routev3.RouteConfiguration) *routev3.RouteConfiguration {
	if !f.needsStrip(rc) {
		return rc
	}
	out := proto.CloneOf(rc)
	f.strip(out.TypedPerFilterConfig)
	for _, vh := range out.GetVirtualHosts() {
		f.strip(vh.TypedPerFilterConfig)
		for _, r := range vh.GetRoutes() {
			f.strip(r.TypedPerFilterConfig)
			for _, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
				f.strip(wc.TypedPerFilterConfig)
			}
		}
	}
	return out
}

func (f filterer) needsStrip(rc *routev3.RouteConfiguration) bool {
	lacks := func(m map[string]*anypb.Any) bool {
		for name, a := range m {
			if !f.has(name, a.GetTypeUrl()) {
				return true
			}
		}
		return false
	}
	if lacks(rc.GetTypedPerFilterConfig()) {
		return true
	}
	for _, vh := range rc.GetVirtualHosts() {
		if lacks(vh.GetTypedPerFilterConfig()) {
			return true
		}
		for _, r := range vh.GetRoutes() {
			if lacks(r.GetTypedPerFilterConfig()) {
				return true
			}
			for _, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
				if lacks(wc.GetTypedPerFilterConfig()) {
					return true
				}
			}
		}
	}
	return false
}

func (f filterer) strip(m map[string]*anypb.Any) {
	for name, a := range m {
		if !f.has(name, a.GetTypeUrl()) {
			delete(m, name)
		}
	}
}

// refs is what a set of listeners uses, by resource name.
type refs struct {
	routes, clusters, endpoints map[string]bool
}

func (r *refs) add(m *map[string]bool, name string) {
	if *m == nil {
		*m = map[string]bool{}
	}
	(*m)[name] = true
}

func (r *refs) listener(l *listenerv3.Listener) {
	visit := func(a *anypb.Any) {
		m, err := a.UnmarshalNew()
		if err != nil {
			return
		}
		switch nf := m.(type) {
		case *hcmv3.HttpConnectionManager:
			if name := nf.GetRds().GetRouteConfigName(); name != "" {
				r.add(&r.routes, name)
			}
			if rc := nf.GetRouteConfig(); rc != nil {
				r.routeConfig(rc)
			}
		case *tcpv3.TcpProxy:
			if c := nf.GetCluster(); c != "" {
				r.add(&r.clusters, c)
			}
			for _, wc := range nf.GetWeightedClusters().GetClusters() {
				r.add(&r.clusters, wc.GetName())
			}
		}
	}
	for _, fc := range l.GetFilterChains() {
		for _, nf := range fc.GetFilters() {
			visit(nf.GetTypedConfig())
		}
	}
	for _, nf := range l.GetDefaultFilterChain().GetFilters() {
		visit(nf.GetTypedConfig())
	}
	if a := l.GetApiListener().GetApiListener(); a != nil {
		visit(a)
	}
}

func (r *refs) routeConfig(rc *routev3.RouteConfiguration) {
	for _, vh := range rc.GetVirtualHosts() {
		for _, rt := range vh.GetRoutes() {
			ra := rt.GetRoute()
			if c := ra.GetCluster(); c != "" {
				r.add(&r.clusters, c)
			}
			for _, wc := range ra.GetWeightedClusters().GetClusters() {
				r.add(&r.clusters, wc.GetName())
			}
			for _, mp := range ra.GetRequestMirrorPolicies() {
				r.add(&r.clusters, mp.GetCluster())
			}
		}
	}
}

func (r *refs) cluster(c *clusterv3.Cluster) {
	if c.GetType() != clusterv3.Cluster_EDS {
		return
	}
	name := c.GetEdsClusterConfig().GetServiceName()
	if name == "" {
		name = c.GetName()
	}
	r.add(&r.endpoints, name)
}
