package translate

import (
	"fmt"
	"os"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// NameExtensionPrefix starts the HCM filter name of each extension; the
// extension's own name follows, so that several extensions can share a
// chain.
const NameExtensionPrefix = "omnirelay.extension."

// defaultExtensionDeadline is the per-call deadline when the config sets
// none.
const defaultExtensionDeadline = 10 * time.Millisecond

// extension reads the package files named in x and returns the HCM filter
// name and typed config. The packages travel inline so that xDS alone
// delivers them; the proxy verifies their signatures.
func (t *translator) extension(x *config.Extension) (string, proto.Message, error) {
	pkg, err := t.extensionPackage(x.Package)
	if err != nil {
		return "", nil, fmt.Errorf("extension %q: package: %w", x.Name, err)
	}
	d := defaultExtensionDeadline
	if x.Deadline != nil {
		d = x.Deadline.Std()
	}
	out := &extv1.Extension{
		Name:       x.Name,
		Package:    pkg,
		Config:     []byte(x.Config),
		Policy:     extensionPolicy(x.Policy),
		Fallback:   extensionPolicy(x.Fallback),
		Deadline:   durationpb.New(d),
		FailStatus: uint32(x.FailStatus),
	}
	if x.VMID != "" || x.RootID != "" || x.VMConfig != "" {
		out.Wasm = &extv1.Wasm{VmId: x.VMID, RootId: x.RootID, VmConfig: []byte(x.VMConfig)}
	}
	if c := x.Canary; c != nil {
		if c.By == config.CanaryByProxies {
			// Each proxy runs one version: MeshKit picks it per proxy
			// (config.ResolveProxyCanaries) before translating.
			return "", nil, fmt.Errorf("extension %q: canary by proxies is resolved by MeshKit for each proxy; it cannot be translated as is", x.Name)
		}
		prev, err := t.extensionPackage(c.PreviousPackage)
		if err != nil {
			return "", nil, fmt.Errorf("extension %q: canary.previous_package: %w", x.Name, err)
		}
		out.Canary = &extv1.Canary{Percent: c.Percent, PreviousPackage: prev, PreviousConfig: []byte(c.PreviousConfig)}
	}
	return NameExtensionPrefix + x.Name, out, nil
}

func extensionPolicy(p string) extv1.Policy {
	switch p {
	case "fail_open":
		return extv1.Policy_FAIL_OPEN
	case "reload":
		return extv1.Policy_RELOAD
	case "fail_closed":
		return extv1.Policy_FAIL_CLOSED
	}
	return extv1.Policy_POLICY_UNSPECIFIED
}

func (t *translator) addExtension(x *config.Extension, add func(string, proto.Message) error) error {
	name, m, err := t.extension(x)
	if err != nil {
		return err
	}
	return add(name, m)
}

// extensionPackage reads a package file, or fetches a "store:NAME@VERSION"
// reference from the package store.
func (t *translator) extensionPackage(ref string) ([]byte, error) {
	name, version, stored := config.StoredPackage(ref)
	if !stored {
		return os.ReadFile(t.cfg.FilePath(ref))
	}
	if t.opts.Packages == nil {
		return nil, fmt.Errorf("%s: no package store here (store: references are resolved by MeshKit)", ref)
	}
	return t.opts.Packages(name, version)
}
