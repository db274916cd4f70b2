package config

import (
	"google.golang.org/protobuf/types/known/structpb"
)

// Metadata is Envoy's core Metadata on a route or a cluster: values filters
// read by filter name, such as Proxy-Wasm plugins with the route_metadata
// and cluster_metadata properties
// (route_metadata.filter_metadata.envoy.filters.http.wasm.auth). Values are
// YAML scalars, lists and maps, as a protobuf Struct holds them.
type Metadata struct {
	FilterMetadata map[string]map[string]any `yaml:"filter_metadata"`
}

// Structs returns the filter metadata as protobuf Structs by filter name.
func (m *Metadata) Structs() (map[string]*structpb.Struct, error) {
	if m == nil || len(m.FilterMetadata) == 0 {
		return nil, nil
	}
	out := make(map[string]*structpb.Struct, len(m.FilterMetadata))
	for name, fields := range m.FilterMetadata {
		s, err := structpb.NewStruct(fields)
		if err != nil {
			return nil, err
		}
		out[name] = s
	}
	return out, nil
}

func (v *validator) metadata(m *Metadata, p string) {
	if m == nil {
		return
	}
	for name, fields := range m.FilterMetadata {
		if name == "" {
			v.errf(p+".filter_metadata", "an empty filter name")
			continue
		}
		if _, err := structpb.NewStruct(fields); err != nil {
			v.errf(p+".filter_metadata."+name, "%v", err)
		}
	}
}
