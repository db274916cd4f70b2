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
// manifest's ABI must be the one the module declares.
func (r *Runtime) Load(ctx context.Context, m extpkg.Manifest, payload, config []byte) (extension.Plugin, error) {
	if m.ABI != ABI021 && m.ABI != ABI020 {
		return nil, fmt.Errorf("wasm plugin %q: manifest ABI %q: want %s or %s", m.Name, m.ABI, ABI021, ABI020)
	}
	p, err := r.LoadModule(ctx, m.Name, payload, config)
	if err != nil {
		return nil, err
	}
	if p.ABI() != m.ABI {
		p.Close()
		return nil, fmt.Errorf("wasm plugin %q: manifest declares ABI %s but the module is built for %s", m.Name, m.ABI, p.ABI())
	}
	return p, nil
}
