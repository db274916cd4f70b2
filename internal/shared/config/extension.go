package config

import (
	"os"
	"regexp"
	"strings"

	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
)

// Extension runs a signed extension package (Proxy-Wasm, DSL or native) as
// an HTTP filter. The package file is read at translation and carried
// inline in xDS; its signature is checked by the proxy against its own
// extension trust roots when it loads the package, not here.
type Extension struct {
	// Name names the extension in metrics and logs (and the xDS filter).
	Name string `yaml:"name"`
	// Package is the .orx file (relative to the config file's directory),
	// or "store:NAME@VERSION", a package pushed to MeshKit (omnictl ext
	// push), for configs MeshKit serves.
	Package string `yaml:"package"`
	// Config is given to the plugin as is.
	Config string `yaml:"config"`
	// Policy on a failed call: fail_open, fail_closed (default) or reload.
	Policy string `yaml:"policy"`
	// Fallback is what requests get while a reload runs: fail_open or
	// fail_closed (default). Only with policy reload.
	Fallback string `yaml:"fallback"`
	// Deadline of each call into the plugin (default 10ms).
	Deadline *Duration `yaml:"deadline"`
	// FailStatus answers requests under fail_closed (default 503).
	FailStatus int `yaml:"fail_status"`
	// VMID, RootID and VMConfig are Proxy-Wasm settings, Envoy's
	// PluginConfig fields of the same meaning: plugins with one vm_id share
	// shared data and queues (empty: the plugin has its own); root_id names
	// the plugin's root context (the plugin_root_id property); vm_config is
	// the VM configuration a plugin reads in proxy_on_vm_start.
	VMID     string `yaml:"vm_id"`
	RootID   string `yaml:"root_id"`
	VMConfig string `yaml:"vm_config"`
	// Canary sends Percent of the requests (or, by proxies, of the proxies
	// MeshKit serves) to Package and the rest to PreviousPackage; omnictl
	// ext promote removes it, omnictl ext rollback puts the previous
	// package back in Package (or edit the config to the same effect).
	Canary *ExtensionCanary `yaml:"canary"`
}

// ExtensionCanary is the version an extension's canary is replacing.
type ExtensionCanary struct {
	Percent uint32 `yaml:"percent"`
	// By is what the percent is a share of: requests (default; each proxy
	// splits its requests) or proxies (MeshKit sends Package to Percent of
	// the proxies, chosen by a hash of their node id, and PreviousPackage to
	// the rest; only in configs MeshKit serves).
	By              string `yaml:"by"`
	PreviousPackage string `yaml:"previous_package"`
	// PreviousConfig defaults to the extension's config.
	PreviousConfig string `yaml:"previous_config"`
}

var extensionNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

func (v *validator) extension(x *Extension, p string) {
	if !extensionNameRE.MatchString(x.Name) {
		v.errf(p+".name", "name %q: want 1-63 of [a-z0-9._-], starting with a letter or digit", x.Name)
	}
	kind := v.extensionPackage(x.Package, p+".package")
	for _, f := range []struct{ name, val string }{{"vm_id", x.VMID}, {"root_id", x.RootID}} {
		if len(f.val) > 256 || strings.ContainsRune(f.val, 0) {
			v.errf(p+"."+f.name, "%s: want at most 256 bytes and no NUL", f.name)
		}
	}
	if (x.VMID != "" || x.RootID != "" || x.VMConfig != "") && kind != "" && kind != extpkg.KindWasm {
		v.errf(p, "vm_id, root_id and vm_config are Proxy-Wasm settings; package %s is kind %s", x.Package, kind)
	}
	switch x.Policy {
	case "", "fail_open", "fail_closed", "reload":
	default:
		v.errf(p+".policy", "policy %q: want fail_open, fail_closed or reload", x.Policy)
	}
	switch x.Fallback {
	case "", "fail_open", "fail_closed":
		if x.Fallback != "" && x.Policy != "reload" {
			v.errf(p+".fallback", "fallback applies only to policy reload")
		}
	default:
		v.errf(p+".fallback", "fallback %q: want fail_open or fail_closed", x.Fallback)
	}
	if x.Deadline != nil && *x.Deadline <= 0 {
		v.errf(p+".deadline", "deadline must be greater than 0")
	}
	if x.FailStatus != 0 && (x.FailStatus < 200 || x.FailStatus > 599) {
		v.errf(p+".fail_status", "status %d is not in 200-599", x.FailStatus)
	}
	if c := x.Canary; c != nil {
		if c.Percent > 100 {
			v.errf(p+".canary.percent", "percent %d is more than 100", c.Percent)
		}
		v.extensionPackage(c.PreviousPackage, p+".canary.previous_package")
		switch c.By {
		case "", CanaryByRequests:
		case CanaryByProxies:
			if v.src == nil || !v.src.opts.meshKit {
				v.errf(p+".canary.by", "by proxies needs MeshKit, which chooses the proxies; a config a proxy loads itself can split only by requests")
			}
		default:
			v.errf(p+".canary.by", "by %q: want requests or proxies", c.By)
		}
	}
}

// extensionPackage checks that the file exists and is a well-formed package
// whose payload matches its manifest (unless file checks are skipped, like
// certificate files), and returns its kind ("" when not read). Trust is the
// proxy's decision.
func (v *validator) extensionPackage(path, p string) (kind string) {
	if path == "" {
		v.errf(p, "a package file (.orx) is required")
		return ""
	}
	if name, version, stored := StoredPackage(path); stored {
		if !extensionNameRE.MatchString(name) || version == "" || strings.ContainsAny(version, "/ ") {
			v.errf(p, "%q: want store:NAME@VERSION", path)
		}
		return ""
	}
	if v.src.skipFiles() {
		return ""
	}
	b, err := os.ReadFile(v.c.FilePath(path))
	if err != nil {
		v.errf(p, "%v", err)
		return ""
	}
	pkg, _, err := extpkg.Inspect(b)
	if err != nil {
		v.errf(p, "%s: %v", path, err)
		return ""
	}
	return pkg.Manifest.Kind
}

// StoredPackage splits a "store:NAME@VERSION" package reference; stored is
// false for a file path.
func StoredPackage(ref string) (name, version string, stored bool) {
	rest, ok := strings.CutPrefix(ref, "store:")
	if !ok {
		return "", "", false
	}
	name, version, _ = strings.Cut(rest, "@")
	return name, version, true
}
