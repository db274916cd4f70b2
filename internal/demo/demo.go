// Package demo owns the README's first command: MeshKit with its embedded
// store, an OmniRelay edge proxy in xDS mode verifying MeshKit's signatures,
// and sample backends, all on loopback in one process. It is the one place
// that starts both planes together; neither plane imports the other, this
// package imports both.
package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/omnirelay/omnirelay/examples"
	"github.com/omnirelay/omnirelay/internal/controlplane/serve"
	"github.com/omnirelay/omnirelay/internal/dataplane/app"
	dpdemo "github.com/omnirelay/omnirelay/internal/dataplane/demo"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// Options configures the demo. Zero values give the README's addresses.
type Options struct {
	Log        *slog.Logger
	Dir        string // working directory (keys, store, LKG); default a temp dir
	XDSAddress string // default 127.0.0.1:15010
	APIAddress string // default 127.0.0.1:15011
	// Backends default to the sample services of examples/mesh-demo.yaml
	// plus shop-v2-b on 127.0.0.1:9004, which starts unregistered.
	Backends []dpdemo.Backend
	// Config is the desired config; default examples/mesh-demo.yaml.
	Config []byte
	// AdminAddress overrides the proxy's admin address ("" keeps the config's).
	AdminAddress string
	// SotW makes the proxy use state-of-the-world ADS (default delta).
	SotW bool
	// NoSigning serves unsigned config (and the proxy has no trust root).
	NoSigning bool
}

// Demo is a running demo.
type Demo struct {
	MeshKit *serve.Process
	Proxy   *app.Proxy
	Dir     string

	stopBackends func()
	removeDir    bool
}

// Start starts backends, MeshKit and the proxy, and waits until the proxy
// runs MeshKit's config.
func Start(opt Options) (*Demo, error) {
	if opt.Log == nil {
		opt.Log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if opt.XDSAddress == "" {
		opt.XDSAddress = "127.0.0.1:15010"
	}
	if opt.APIAddress == "" {
		opt.APIAddress = "127.0.0.1:15011"
	}
	if opt.Backends == nil {
		opt.Backends = append(dpdemo.Backends(), dpdemo.Backend{Name: "shop-v2-b", Addr: "127.0.0.1:9004"})
	}
	if opt.Config == nil {
		b, err := examples.FS.ReadFile("mesh-demo.yaml")
		if err != nil {
			return nil, err
		}
		opt.Config = b
	}
	d := &Demo{Dir: opt.Dir}
	if d.Dir == "" {
		dir, err := os.MkdirTemp("", "omnirelay-demo-")
		if err != nil {
			return nil, err
		}
		d.Dir, d.removeDir = dir, true
	}
	ok := false
	defer func() {
		if !ok {
			d.Stop(context.Background())
		}
	}()
	stop, err := dpdemo.StartBackends(opt.Backends)
	if err != nil {
		return nil, err
	}
	d.stopBackends = stop

	var priv, pub string
	if !opt.NoSigning {
		priv, pub = filepath.Join(d.Dir, "signing.key"), filepath.Join(d.Dir, "trust-root.pem")
		pk, sk, err := signing.GenerateKey()
		if err != nil {
			return nil, err
		}
		if err := signing.WritePrivateKey(priv, sk); err != nil {
			return nil, err
		}
		if err := signing.WritePublicKey(pub, pk); err != nil {
			return nil, err
		}
	}
	cfgPath := filepath.Join(d.Dir, "mesh.yaml")
	if err := os.WriteFile(cfgPath, opt.Config, 0o644); err != nil {
		return nil, err
	}
	d.MeshKit, err = serve.Start(serve.Options{
		XDSAddress: opt.XDSAddress, APIAddress: opt.APIAddress,
		DataDir: filepath.Join(d.Dir, "meshkit-data"), SigningKey: priv,
		ConfigFile: cfgPath, ReplicaID: "demo", Log: opt.Log.With("plane", "control"),
	})
	if err != nil {
		return nil, fmt.Errorf("meshkit: %w", err)
	}
	d.Proxy, err = app.Start(app.Options{
		XDS: &app.XDSOptions{
			Address: d.MeshKit.XDSAddr().String(), NodeID: "edge-1", Cluster: "edge",
			LKGDir: filepath.Join(d.Dir, "lkg"), TrustRoot: pub, Build: "demo", SotW: opt.SotW,
		},
		AdminAddress: opt.AdminAddress,
		Log:          opt.Log.With("plane", "data"),
		DrainTimeout: 5 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("omnirelay: %w", err)
	}
	if err := d.waitReady(15 * time.Second); err != nil {
		return nil, err
	}
	ok = true
	return d, nil
}

// waitReady waits for the proxy's first config from MeshKit.
func (d *Demo) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for d.Proxy.Runtime.Current() == nil {
		if time.Now().After(deadline) {
			return errors.New("the proxy received no config from MeshKit in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// Stop drains the proxy, then stops MeshKit and the backends.
func (d *Demo) Stop(ctx context.Context) {
	if d.Proxy != nil {
		_ = d.Proxy.Shutdown(ctx)
	}
	if d.MeshKit != nil {
		_ = d.MeshKit.Shutdown(ctx)
	}
	if d.stopBackends != nil {
		d.stopBackends()
	}
	if d.removeDir {
		_ = os.RemoveAll(d.Dir)
	}
}

// Tour is what the demo prints once it runs.
func (d *Demo) Tour() string {
	return fmt.Sprintf(`OmniRelay demo running: MeshKit (xDS %s, API %s) serves signed config to an OmniRelay edge proxy.
  curl -s localhost:8080/                                    # 80/20 split between shop-v1 and shop-v2
  curl -s -H 'x-canary: true' localhost:8080/api/items       # canary route to shop-v2
  go run ./cmd/omnictl get proxies                           # the connected proxy, its build and ACKed versions
  go run ./cmd/omnictl apply -f examples/mesh-demo-50.yaml   # change the split to 50/50, live
  go run ./cmd/omnictl register --service shop-v2 --address 127.0.0.1:9004 --heartbeat
                                                             # a second shop-v2 host joins through the registry
  curl -s localhost:9901/config_dump                         # the resources the proxy runs
MeshKit's desired config is %s (edits are applied; bad ones are rejected and logged).
Ctrl-C stops everything.
`, d.MeshKit.XDSAddr(), d.MeshKit.APIAddr(), filepath.Join(d.Dir, "mesh.yaml"))
}
