package versions

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// Summarize names what changed from old to new, one line per change, by
// resource: listeners (and, inside a changed one, which parts: its
// virtual hosts by name, its filters), clusters, and the admin block. A
// nil old is the first version: everything in new is added.
func Summarize(old, new *config.Config) []string {
	var out []string
	if old == nil {
		old = &config.Config{}
	}
	if !reflect.DeepEqual(old.Admin, new.Admin) {
		out = append(out, "admin changed")
	}
	out = append(out, byName("listener", old.Listeners, new.Listeners, func(l config.Listener) string { return l.Name }, listenerChanges)...)
	out = append(out, byName("cluster", old.Clusters, new.Clusters, func(c config.Cluster) string { return c.Name }, func(a, b config.Cluster) []string {
		return fieldChanges(a, b, "name")
	})...)
	return out
}

// byName compares two lists of named resources: added, removed, and
// changed (with what changed, from parts).
func byName[T any](kind string, old, new []T, name func(T) string, parts func(a, b T) []string) []string {
	var out []string
	prev := map[string]T{}
	for _, o := range old {
		prev[name(o)] = o
	}
	seen := map[string]bool{}
	for _, n := range new {
		k := name(n)
		seen[k] = true
		o, ok := prev[k]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s %s added", kind, k))
		case !reflect.DeepEqual(o, n):
			if p := parts(o, n); len(p) > 0 {
				out = append(out, fmt.Sprintf("%s %s: %s", kind, k, strings.Join(p, ", ")))
			} else {
				out = append(out, fmt.Sprintf("%s %s changed", kind, k))
			}
		}
	}
	for _, o := range old {
		if !seen[name(o)] {
			out = append(out, fmt.Sprintf("%s %s removed", kind, name(o)))
		}
	}
	return out
}

func listenerChanges(a, b config.Listener) []string {
	var out []string
	vh := byName("virtual_host", a.VirtualHosts, b.VirtualHosts, func(v config.VirtualHost) string { return v.Name }, func(x, y config.VirtualHost) []string {
		return fieldChanges(x, y, "name")
	})
	out = append(out, vh...)
	if !reflect.DeepEqual(a.Filters, b.Filters) {
		out = append(out, "filters "+filterNames(a.Filters)+" -> "+filterNames(b.Filters))
	}
	ra, rb := a, b
	ra.VirtualHosts, rb.VirtualHosts, ra.Filters, rb.Filters = nil, nil, nil, nil
	out = append(out, fieldChanges(ra, rb, "name", "virtual_hosts", "filters")...)
	return out
}

// fieldChanges lists the YAML names of the top-level fields that differ
// between two structs of one type, skipping those named in skip.
func fieldChanges[T any](a, b T, skip ...string) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	t := va.Type()
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			name = strings.ToLower(f.Name)
		}
		if slices.Contains(skip, name) {
			continue
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, name+" changed")
		}
	}
	return out
}

// filterNames renders a filter chain as its kinds in order, an extension
// with its package: "[jwt, extension stamp=store:stamp@2.0.0]".
func filterNames(fs []config.HTTPFilter) string {
	names := make([]string, 0, len(fs))
	for _, f := range fs {
		names = append(names, filterName(f))
	}
	return "[" + strings.Join(names, ", ") + "]"
}

func filterName(f config.HTTPFilter) string {
	if x := f.Extension; x != nil {
		return "extension " + x.Name + "=" + x.Package
	}
	v := reflect.ValueOf(f)
	t := v.Type()
	for i := range t.NumField() {
		fv := v.Field(i)
		if !t.Field(i).IsExported() || fv.IsZero() {
			continue
		}
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "" {
			name = strings.ToLower(t.Field(i).Name)
		}
		return name
	}
	return "?"
}
