package config

// networkFilters checks the filters of a tcp or tls listener: extensions
// only (Proxy-Wasm network filters, docs/wasm.md), each named once. HTTP
// filters need an http or https listener.
func (v *validator) networkFilters(fs []HTTPFilter, proto ListenerProtocol, p string) {
	for _, f := range fs {
		if f.Extension == nil || f.Headers != nil || f.LocalRateLimit != nil || f.Fault != nil || f.CORS != nil || f.JWT != nil || f.RBAC != nil {
			v.errf(p, "not allowed on %s listener (HTTP filters need protocol http or https; extension filters are allowed)", article(proto))
			return
		}
	}
	seen := map[string]int{}
	for i, f := range fs {
		fp := idx(p, i)
		v.extension(f.Extension, fp+".extension")
		if f.Extension.Canary != nil {
			v.errf(fp+".extension.canary", "canary is not supported on tcp or tls listeners")
		}
		if j, dup := seen[f.Extension.Name]; dup {
			v.errf(fp, "extension %s is listed twice (also %s)", f.Extension.Name, idx(p, j))
		}
		seen[f.Extension.Name] = i
	}
}
