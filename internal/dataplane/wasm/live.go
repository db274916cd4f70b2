package wasm

// LivePlugins is the number of plugins loaded and not closed yet (each holds
// a compiled module and its pool of instances). The extension factory's
// tests use it to check that replaced versions are released.
func (r *Runtime) LivePlugins() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.plugins)
}
