package capfilter

import (
	"fmt"
	"slices"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"

	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
)

const extensionType = resource.APITypePrefix + "omnirelay.extensions.v1.Extension"

// extension says why the client cannot load the extension filter config a
// ("" when it can, or a is not an extension): every package it carries
// (the canary's previous one too) needs a runtime and an ABI the client
// advertises. Signatures are the proxy's business; a malformed package
// is refused here already, since no proxy could load it.
func (f filterer) extension(a *anypb.Any) string {
	if a.GetTypeUrl() != extensionType {
		return ""
	}
	var x extv1.Extension
	if err := a.UnmarshalTo(&x); err != nil {
		return fmt.Sprintf("whose config does not decode: %v", err)
	}
	pkgs := [][]byte{x.GetPackage()}
	if c := x.GetCanary(); c != nil {
		pkgs = append(pkgs, c.GetPreviousPackage())
	}
	for _, b := range pkgs {
		p, _, err := extpkg.Inspect(b)
		if err != nil {
			return fmt.Sprintf("whose package is malformed: %v", err)
		}
		m := p.Manifest
		if !slices.Contains(f.caps.Runtimes, m.Kind) {
			return fmt.Sprintf("whose package %s@%s needs the %s runtime, which node build %s lacks", m.Name, m.Version, m.Kind, f.build)
		}
		if !slices.Contains(f.caps.ABIs, m.ABI) {
			return fmt.Sprintf("whose package %s@%s needs ABI %s, which node build %s lacks", m.Name, m.Version, m.ABI, f.build)
		}
	}
	return ""
}
