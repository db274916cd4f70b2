package meshkit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/omnirelay/omnirelay/internal/controlplane/extstore"
	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	"github.com/omnirelay/omnirelay/internal/shared/capability"
	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/dslrules"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// rolloutDoc has extension stamp on two listeners, one written in flow
// style and one in block style with comments.
const rolloutDoc = `# the mesh
listeners:
  - name: a
    address: 127.0.0.1:8001
    filters: [{ extension: { name: stamp, package: "store:stamp@1.0.0", deadline: 1s } }]
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: main }] }]
  - name: b   # second listener
    address: 127.0.0.1:8002
    filters:
      - extension:
          name: stamp
          package: store:stamp@1.0.0
          config: "rules: []"
          policy: fail_open
      - headers: { request_add: { x-b: "1" } }
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: main }] }]
clusters: [{ name: main, endpoints: [127.0.0.1:9000] }]
`

func newRolloutMeshKit(t testing.TB) *MeshKit {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "meshkit.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	_, priv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, v := range []string{"1.0.0", "2.0.0", "3.0.0"} {
		b, err := extpkg.Pack(extpkg.Manifest{Name: "stamp", Version: v, Kind: extpkg.KindDSL, ABI: dslrules.ABI}, []byte("rules:\n  - name: stamp\n    actions: [{ set_header: { name: x-stamp, value: \""+v+"\" } }]\n"))
		if err == nil {
			b, err = extpkg.Sign(b, signing.NewSigner(priv))
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := extstore.New(st, nil).Push(ctx, &extv1.PushRequest{Package: b}); err != nil {
			t.Fatal(err)
		}
	}
	m := New(Options{Store: st, Log: slog.New(slog.DiscardHandler)})
	if _, err := m.Apply(ctx, "mesh.yaml", []byte(rolloutDoc)); err != nil {
		t.Fatal(err)
	}
	return m
}

// omniNode is an OmniRelay node that can run the DSL extensions of the
// tests (nothing is withheld from it).
func omniNode(id string) *corev3.Node {
	n := &corev3.Node{Id: id}
	capability.Set{Kind: capability.KindOmniRelay, Build: "test",
		Filters:  []string{"envoy.filters.http.router", "envoy.filters.network.http_connection_manager", "omnirelay.extensions.v1.Extension", "envoy.filters.http.header_mutation"},
		Runtimes: []string{extpkg.KindDSL}, ABIs: []string{dslrules.ABI}}.Apply(n)
	return n
}

// servedPackage is the version of the package extension stamp runs in
// group g's snapshot, or why there is none.
func servedPackage(t *testing.T, m *MeshKit, g string) string {
	t.Helper()
	snap := m.cache.Get(g)
	if snap == nil {
		return "no snapshot"
	}
	var versions []string
	for _, r := range snap.Resources[resourcev3.ListenerType] {
		var l listenerv3.Listener
		if err := r.Body.UnmarshalTo(&l); err != nil {
			t.Fatal(err)
		}
		var hcm hcmv3.HttpConnectionManager
		if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
			t.Fatal(err)
		}
		var x extv1.Extension
		if err := hcm.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(&x); err != nil {
			t.Fatal(err)
		}
		p, _, err := extpkg.Inspect(x.GetPackage())
		if err != nil {
			t.Fatal(err)
		}
		if x.GetCanary() != nil {
			t.Fatalf("group %s was served a canary by requests", g)
		}
		versions = append(versions, p.Manifest.Version)
	}
	return strings.Join(versions, ",")
}

func desiredConfig(t *testing.T, m *MeshKit) *config.Config {
	t.Helper()
	doc, _, err := m.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse("mesh.yaml", doc, config.ServedByMeshKit())
	if err != nil {
		t.Fatalf("stored document: %v\n%s", err, doc)
	}
	return c
}

func TestRolloutSteps(t *testing.T) {
	m := newRolloutMeshKit(t)
	ctx := context.Background()
	type want struct {
		pkg, prev, by string
		percent       uint32
	}
	check := func(step string, w want) {
		t.Helper()
		c := desiredConfig(t, m)
		for i, l := range c.Listeners {
			x := l.Filters[0].Extension
			got := want{pkg: x.Package}
			if x.Canary != nil {
				got.prev, got.by, got.percent = x.Canary.PreviousPackage, x.Canary.By, x.Canary.Percent
			}
			if got != w {
				t.Fatalf("after %s, listener %d: %+v, want %+v", step, i, got, w)
			}
		}
		// What the step did not touch stays.
		if b := c.Listeners[1].Filters[0].Extension; b.Policy != "fail_open" || b.Config != "rules: []" {
			t.Fatalf("after %s: listener b's extension lost its settings: %+v", step, b)
		}
		if c.Listeners[0].Filters[0].Extension.Deadline.Std() != time.Second || len(c.Listeners[1].Filters) != 2 {
			t.Fatalf("after %s: the rest of the document changed", step)
		}
	}
	steps := []struct {
		name    string
		run     func() (RolloutResult, error)
		want    want
		wantErr error
	}{
		{name: "promote without canary", run: func() (RolloutResult, error) { return m.Promote(ctx, "stamp") }, wantErr: ErrNoCanary,
			want: want{pkg: "store:stamp@1.0.0"}},
		{name: "unknown extension", run: func() (RolloutResult, error) { return m.Rollback(ctx, "nope") }, wantErr: ErrNoExtension,
			want: want{pkg: "store:stamp@1.0.0"}},
		{name: "canary", run: func() (RolloutResult, error) { return m.Canary(ctx, "stamp", "store:stamp@2.0.0", 50, "proxies") },
			want: want{pkg: "store:stamp@2.0.0", prev: "store:stamp@1.0.0", by: "proxies", percent: 50}},
		{name: "raise", run: func() (RolloutResult, error) { return m.Canary(ctx, "stamp", "store:stamp@2.0.0", 75, "proxies") },
			want: want{pkg: "store:stamp@2.0.0", prev: "store:stamp@1.0.0", by: "proxies", percent: 75}},
		{name: "rollback", run: func() (RolloutResult, error) { return m.Rollback(ctx, "stamp") },
			want: want{pkg: "store:stamp@1.0.0"}},
		{name: "rollback again", run: func() (RolloutResult, error) { return m.Rollback(ctx, "stamp") }, wantErr: ErrNoCanary,
			want: want{pkg: "store:stamp@1.0.0"}},
		{name: "canary by requests", run: func() (RolloutResult, error) { return m.Canary(ctx, "stamp", "store:stamp@3.0.0", 10, "") },
			want: want{pkg: "store:stamp@3.0.0", prev: "store:stamp@1.0.0", percent: 10}},
		{name: "missing package", run: func() (RolloutResult, error) { return m.Canary(ctx, "stamp", "store:stamp@9.0.0", 10, "") },
			wantErr: errors.New("no package stamp@9.0.0"), want: want{pkg: "store:stamp@3.0.0", prev: "store:stamp@1.0.0", percent: 10}},
		{name: "promote", run: func() (RolloutResult, error) { return m.Promote(ctx, "stamp") },
			want: want{pkg: "store:stamp@3.0.0"}},
	}
	for _, s := range steps {
		_, before, _ := m.Get(ctx)
		res, err := s.run()
		switch {
		case s.wantErr == nil && err != nil:
			t.Fatalf("%s: %v", s.name, err)
		case s.wantErr != nil && (err == nil || !errors.Is(err, s.wantErr) && !strings.Contains(err.Error(), s.wantErr.Error())):
			t.Fatalf("%s: error %v, want %v", s.name, err, s.wantErr)
		case s.wantErr == nil && (len(res.Paths) != 2 || res.Version == before):
			t.Fatalf("%s: result %+v (version before %s)", s.name, res, before)
		}
		check(s.name, s.want)
	}
	doc, _, _ := m.Get(ctx)
	if !strings.Contains(string(doc), "# the mesh") || !strings.Contains(string(doc), "# second listener") {
		t.Fatalf("comments outside the rewritten entries were lost:\n%s", doc)
	}
}

// With a canary by proxies at 50%, exactly the nodes hashed below 50 get
// the new package; nodes on one side share one snapshot.
func TestCanaryByProxiesGroups(t *testing.T) {
	m := newRolloutMeshKit(t)
	ctx := context.Background()
	nodes := map[string]bool{} // node -> in the canary
	var in, out int
	for i := 0; in < 3 || out < 3; i++ {
		id := fmt.Sprintf("proxy-%d", i)
		b := config.ProxyBucket(id)
		if _, dup := nodes[id]; dup {
			continue
		}
		nodes[id] = config.InProxyCanary(b, 50)
		if nodes[id] {
			in++
		} else {
			out++
		}
	}
	groups := map[string]string{}
	for id := range nodes {
		g, err := m.group(omniNode(id))
		if err != nil {
			t.Fatal(err)
		}
		groups[id] = g
	}
	if _, err := m.Canary(ctx, "stamp", "store:stamp@2.0.0", 50, "proxies"); err != nil {
		t.Fatal(err)
	}
	m.rebuildAll()
	snaps := map[bool]map[string]bool{true: {}, false: {}}
	for id, g := range groups {
		want := "store:stamp@1.0.0"
		if nodes[id] {
			want = "store:stamp@2.0.0"
		}
		m.proxies.mu.Lock()
		got := m.proxies.exts[g]
		m.proxies.mu.Unlock()
		if len(got) != 2 || got[0].Package != want || got[1].Package != want {
			t.Fatalf("node %s (bucket %d): runs %+v, want %s", id, config.ProxyBucket(id), got, want)
		}
		v := strings.TrimPrefix(want, "store:stamp@")
		if got := servedPackage(t, m, g); got != v+","+v {
			t.Fatalf("node %s: served %s, want %s on both listeners", id, got, want)
		}
		snaps[nodes[id]][m.cache.Get(g).Version] = true
	}
	if len(snaps[true]) != 1 || len(snaps[false]) != 1 {
		t.Fatalf("distinct snapshot versions: in %v, out %v; want one per side", snaps[true], snaps[false])
	}
}

// Promote and roll back act on the entries in canary and leave the others.
func TestRolloutPartialCanary(t *testing.T) {
	m := newRolloutMeshKit(t)
	ctx := context.Background()
	doc := strings.Replace(rolloutDoc, `package: "store:stamp@1.0.0", deadline: 1s`,
		`package: "store:stamp@2.0.0", deadline: 1s, canary: { percent: 5, previous_package: "store:stamp@1.0.0" }`, 1)
	if _, err := m.Apply(ctx, "mesh.yaml", []byte(doc)); err != nil {
		t.Fatal(err)
	}
	res, err := m.Rollback(ctx, "stamp")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Paths) != 1 || res.Paths[0] != "listeners[0].filters[0].extension" {
		t.Fatalf("rewrote %v, want the entry in canary only", res.Paths)
	}
	c := desiredConfig(t, m)
	for i, l := range c.Listeners {
		if x := l.Filters[0].Extension; x.Package != "store:stamp@1.0.0" || x.Canary != nil {
			t.Fatalf("listener %d: %+v", i, x)
		}
	}
	if _, err := m.Promote(ctx, "stamp"); !errors.Is(err, ErrNoCanary) {
		t.Fatalf("promote with no canary left: %v", err)
	}
}

// racingStore runs hook once, right after the rollout step read the
// desired config: another writer changes it in between.
type racingStore struct {
	store.Store
	hook func()
}

func (s *racingStore) Get(ctx context.Context, key string) (store.KV, error) {
	kv, err := s.Store.Get(ctx, key)
	if h := s.hook; h != nil && key == KeyDesired {
		s.hook = nil
		h()
	}
	return kv, err
}

// A step whose document changed after it was read fails (ABORTED in the
// API) and stores nothing: the other writer's config stays.
func TestRolloutConflict(t *testing.T) {
	m := newRolloutMeshKit(t)
	ctx := context.Background()
	other := strings.Replace(rolloutDoc, "# the mesh", "# changed by another apply", 1)
	rs := &racingStore{Store: m.opt.Store}
	rs.hook = func() {
		if _, err := m.Apply(ctx, "mesh.yaml", []byte(other)); err != nil {
			t.Error(err)
		}
	}
	m.opt.Store = rs
	if _, err := m.Canary(ctx, "stamp", "store:stamp@2.0.0", 10, ""); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("canary over a concurrent apply: %v, want a conflict", err)
	}
	doc, _, _ := m.Get(ctx)
	if string(doc) != other {
		t.Fatalf("desired config after the conflict:\n%s", doc)
	}
	if _, err := m.Canary(ctx, "stamp", "store:stamp@2.0.0", 10, ""); err != nil {
		t.Fatalf("retry: %v", err)
	}
}
