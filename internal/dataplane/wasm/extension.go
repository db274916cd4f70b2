package wasm

import (
	"context"
	"fmt"

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
)

var (
	_ extension.Runtime = (*Runtime)(nil)
	_ extension.Plugin  = (*Plugin)(nil)
)

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
