package wasm

import (
	"context"
	"fmt"

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
)

var (
	_ extension.Runtime   = (*Runtime)(nil)
	_ extension.Plugin    = (*Plugin)(nil)
	_ extension.Describer = (*Plugin)(nil)
	_ extension.VMLoader  = (*Runtime)(nil)
)

// Describe implements extension.Describer. A Proxy-Wasm module may act in
// both phases. It keeps its deadline: every guest call runs under the
// instance's timer (instance.run), which stops the guest when the call's
// deadline passes, and a call that starts after it (a slow body read before
// proxy_on_request_body, say) is refused; waits for an instance or a
// call-out end with ctx. What is not caught is a guest call that ends after
// its deadline but before the timer has run (timer latency, microseconds on
// an idle machine): it counts as ok. The response phase is skipped for a
// stream whose context has no response callback (headers, body or
// trailers) or whose instance broke.
func (p *Plugin) Describe() extension.Capabilities {
	return extension.Capabilities{Phases: extension.AllPhases, KeepsDeadline: true, SkipsResponse: skipsResponse}
}

// skipsResponse: OnResponse would return at once; state is the stream's
// *streamCtx.
func skipsResponse(state any, s *filter.Stream) bool {
	st, _ := state.(*streamCtx)
	return !needsResponse(st, s)
}

// Load implements extension.Runtime: the payload is the module, config the
// plugin configuration, the manifest's name the plugin's name. The
// manifest's ABI and the module's marker may be either 0.2.0 or 0.2.1, in
// any combination: this host implements 0.2.1, whose functions are a
// superset of 0.2.0's, and Envoy accepts both markers for the same host (the
// upstream Go SDK's modules export proxy_abi_version_0_2_0 whatever their
// packer says).
func (r *Runtime) Load(ctx context.Context, m extpkg.Manifest, payload, config []byte) (extension.Plugin, error) {
	return r.LoadVM(ctx, m, payload, config, extension.VM{})
}

// LoadVM implements extension.VMLoader: Load with the plugin's vm_id,
// root_id and VM configuration.
func (r *Runtime) LoadVM(ctx context.Context, m extpkg.Manifest, payload, config []byte, vm extension.VM) (extension.Plugin, error) {
	if m.ABI != ABI021 && m.ABI != ABI020 {
		return nil, fmt.Errorf("wasm plugin %q: manifest ABI %q: want %s or %s", m.Name, m.ABI, ABI021, ABI020)
	}
	return r.LoadModuleVM(ctx, m.Name, payload, config, VM{ID: vm.ID, RootID: vm.RootID, Config: vm.Config})
}
