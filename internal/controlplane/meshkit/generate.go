package meshkit

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/controlplane/capfilter"
	"github.com/omnirelay/omnirelay/internal/controlplane/xdsserver"
	"github.com/omnirelay/omnirelay/internal/shared/capability"
	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
	"github.com/omnirelay/omnirelay/internal/shared/translate"
)

// parseAndCheck is the validation every apply and every stored document
// goes through: parse strictly, validate, and translate for each consumer
// kind, so that a document MeshKit accepts is one it can serve to all.
func (m *MeshKit) parseAndCheck(filename string, data []byte) (*config.Config, error) {
	cfg, err := config.Parse(filename, data, config.ServedByMeshKit())
	if err != nil {
		return nil, err
	}
	opts := translate.Options{ADS: true, ServiceEndpoints: func(string) []config.Endpoint { return nil }, Packages: m.packages}
	// Each side of the canaries by proxies is a config some proxies get.
	for _, bucket := range cfg.ProxyCanarySides() {
		side, _ := cfg.ResolveProxyCanaries(bucket)
		if _, err := translate.TranslateWith(side, opts); err != nil {
			return nil, err
		}
		if _, err := translate.ForGRPC(side, opts); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// buildGroup builds and publishes the snapshot of one group. The caller
// holds buildMu. On failure the group keeps its previous snapshot.
func (m *MeshKit) buildGroup(g string, k groupKey, built map[string]*builtSnapshot) {
	m.mu.Lock()
	d, st := m.desired, m.staged
	m.mu.Unlock()
	if d == nil {
		// Nothing desired yet: answer nothing rather than an empty config,
		// which would make proxies drop their listeners (they keep their
		// last-known-good instead).
		return
	}
	// A running rollout serves its staged config to the buckets below its
	// percent, like an extension canary by proxies.
	version, doc := d.Version, d.cfg
	if st != nil && config.InProxyCanary(k.bucket, st.percent) {
		version, doc = st.version, st.cfg
	}
	memo := version + "/" + k.base() + "/" + strconv.FormatUint(uint64(doc.ProxyCanarySide(k.bucket)), 10)
	b := built[memo]
	if b == nil {
		// Buckets on the same side resolve to the same config and choices.
		cfg, choices := doc.ResolveProxyCanaries(k.bucket)
		var ok bool
		if b, ok = m.buildSnapshot(g, version, cfg, k.caps); !ok {
			return
		}
		b.choices = choices
		if built != nil {
			built[memo] = b
		}
	}
	m.proxies.setWithheld(g, b.withheld)
	m.proxies.setExtensions(g, b.choices)
	// The groups sharing b get the same *Snapshot, which the cache indexes
	// once for all of them.
	m.cache.Set(g, b.out)
}

// builtSnapshot is one group's xDS snapshot, what was withheld from it and
// the extension packages it runs; groups differing only by canary bucket on
// the same side share it.
type builtSnapshot struct {
	out      *xdsserver.Snapshot
	withheld []capfilter.Withheld
	choices  []config.ExtensionChoice
}

// buildSnapshot translates cfg (resolved for the group's canary side) for
// the capabilities caps; false when it cannot (logged: the group keeps its
// previous snapshot).
func (m *MeshKit) buildSnapshot(g, version string, cfg *config.Config, caps capability.Set) (*builtSnapshot, bool) {
	opts := translate.Options{ADS: true, ServiceEndpoints: m.serviceEndpoints, Packages: m.packages}
	var (
		snap     *resources.Snapshot
		withheld []capfilter.Withheld
		err      error
	)
	if caps.Kind == capability.KindGRPC {
		opts.OnWithheld = func(w translate.Withheld) { withheld = append(withheld, w) }
		snap, err = translate.ForGRPC(cfg, opts)
	} else {
		snap, err = translate.TranslateWith(cfg, opts)
	}
	if err == nil {
		var more []capfilter.Withheld
		snap, more = capfilter.Filter(snap, caps)
		withheld = append(withheld, more...)
	}
	if err != nil {
		m.opt.Log.Error("snapshot not built; the group keeps its previous one", "group", g, "version", version, "error", err)
		return nil, false
	}
	var signer *signing.Signer
	if caps.Kind == capability.KindOmniRelay {
		signer = m.opt.Signer
	}
	out, err := m.toXDS(version, snap, signer)
	if err != nil {
		m.opt.Log.Error("snapshot not built; the group keeps its previous one", "group", g, "version", version, "error", err)
		return nil, false
	}
	for _, w := range withheld {
		m.opt.Log.Warn("resource withheld from a group", "group", g, "type", w.TypeURL, "name", w.Name, "reason", w.Reason)
	}
	return &builtSnapshot{out: out, withheld: withheld}, true
}

func (m *MeshKit) serviceEndpoints(service string) []config.Endpoint {
	if m.opt.Registry == nil {
		return nil
	}
	return m.opt.Registry.Endpoints(service)
}

// toXDS packs a snapshot for the xDS server, signing each resource when a
// signer is given. The snapshot version is the configuration version plus a
// digest of every resource, so a registry change yields a new version too.
func (m *MeshKit) toXDS(configVersion string, s *resources.Snapshot, signer *signing.Signer) (*xdsserver.Snapshot, error) {
	out := &xdsserver.Snapshot{Resources: make(map[string][]*xdsserver.Resource, 5)}
	h := sha256.New()
	add := func(typeURL, name string, msg proto.Message) error {
		body, err := resources.NewAny(msg)
		if err != nil {
			return err
		}
		r := &xdsserver.Resource{Name: name, Body: body}
		if signer != nil {
			md, err := m.signed.sign(signer, name, body)
			if err != nil {
				return err
			}
			r.Metadata = md
		}
		h.Write([]byte(typeURL))
		h.Write([]byte(name))
		h.Write(body.Value)
		out.Resources[typeURL] = append(out.Resources[typeURL], r)
		return nil
	}
	for _, l := range s.Listeners {
		if err := add(resourcev3.ListenerType, l.GetName(), l); err != nil {
			return nil, err
		}
	}
	for _, r := range s.Routes {
		if err := add(resourcev3.RouteType, r.GetName(), r); err != nil {
			return nil, err
		}
	}
	for _, c := range s.Clusters {
		if err := add(resourcev3.ClusterType, c.GetName(), c); err != nil {
			return nil, err
		}
	}
	for _, e := range s.Endpoints {
		if err := add(resourcev3.EndpointType, e.GetClusterName(), e); err != nil {
			return nil, err
		}
	}
	for _, sec := range s.Secrets {
		if err := add(resourcev3.SecretType, sec.GetName(), sec); err != nil {
			return nil, err
		}
	}
	out.Version = configVersion + "-" + hex.EncodeToString(h.Sum(nil)[:6])
	return out, nil
}

// signatureCache keeps the signature of each resource body so that a
// rebuild re-signs only what changed (an endpoint change re-signs one
// ClusterLoadAssignment, not every resource of every group).
type signatureCache struct {
	mu   sync.Mutex
	cur  map[string]*corev3.Metadata
	prev map[string]*corev3.Metadata
}

func newSignatureCache() *signatureCache {
	return &signatureCache{cur: map[string]*corev3.Metadata{}, prev: map[string]*corev3.Metadata{}}
}

func (c *signatureCache) sign(s *signing.Signer, name string, body *anypb.Any) (*corev3.Metadata, error) {
	sum := sha256.Sum256(body.Value)
	key := body.TypeUrl + "\x00" + name + "\x00" + string(sum[:])
	c.mu.Lock()
	md, ok := c.cur[key]
	if !ok {
		if md, ok = c.prev[key]; ok {
			c.cur[key] = md
		}
	}
	c.mu.Unlock()
	if ok {
		return md, nil
	}
	md, err := signing.SignResource(s, name, body)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.cur[key] = md
	c.mu.Unlock()
	return md, nil
}

// sweep forgets signatures not used since the previous sweep.
func (c *signatureCache) sweep() {
	c.mu.Lock()
	c.prev, c.cur = c.cur, map[string]*corev3.Metadata{}
	c.mu.Unlock()
}
