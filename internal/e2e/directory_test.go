package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/omnirelay/omnirelay/internal/controlplane/meshkit"
	"github.com/omnirelay/omnirelay/internal/controlplane/serve"
	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	"github.com/omnirelay/omnirelay/internal/controlplane/store/etcdtest"
	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
	"github.com/omnirelay/omnirelay/internal/shared/capability"
	"github.com/omnirelay/omnirelay/internal/shared/translate"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

// ackedADS opens a delta ADS stream for node id on addr, receives the
// listeners and ACKs them; the stream stays open until the returned
// function (or the test's end) closes it.
func ackedADS(t *testing.T, addr, id string) (closeStream func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	node := &corev3.Node{Id: id, Cluster: "e2e"}
	capability.Set{Kind: capability.KindOmniRelay, Build: "e2e",
		Filters: []string{translate.NameHCM, translate.NameRouter, translate.NameTCPProxy}}.Apply(node)
	st := openADS(ctx, t, addr, node)
	resp, err := st.Recv()
	if err != nil {
		t.Fatalf("%s: first listeners: %v", id, err)
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatalf("%s: ACK: %v", id, err)
	}
	return cancel
}

// listing is what a replica's API lists: "node@replica" sorted, and each
// node's kind and ACKed listener version ("omnirelay v").
func listing(t *testing.T, p *serve.Process) (rows string, acked map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := meshkitv1.NewProxiesClient(apiConn(t, p.APIAddr().String())).List(ctx, &meshkitv1.ListProxiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	acked = map[string]string{}
	for _, px := range resp.GetProxies() {
		s = append(s, px.GetNodeId()+"@"+px.GetReplica())
		if v := px.GetAcked()[resourcev3.ListenerType]; v != "" {
			acked[px.GetNodeId()] = px.GetKind() + " " + v
		}
	}
	sort.Strings(s)
	return strings.Join(s, " "), acked
}

// TestProxyDirectoryAcrossReplicas: two MeshKit replicas on one real etcd,
// xDS clients connected to each. Either replica lists every client with
// the replica it is on and its ACK. Replica b then dies (cut off etcd, its
// lease unrevoked): a proxy that leaves it for a is listed once, on a,
// while b's entry for it is still stored; once b's lease runs out, b's
// other proxy is no longer listed.
func TestProxyDirectoryAcrossReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an embedded etcd and two MeshKits")
	}
	etcd := etcdtest.StartEtcd(t)
	// b reaches etcd through a relay that the test cuts to kill it.
	relay := etcdtest.NewRelay(t, etcd[0])
	a := startReplica(t, etcd, "", "a")
	b := startReplica(t, relay.Endpoints(), "", "b")
	// b's shutdown needs etcd (the registry's expiry campaign resigns
	// through the client and waits for it): give it back first.
	t.Cleanup(relay.Heal)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	doc := fmt.Sprintf(`listeners:
  - name: web
    address: %s
    virtual_hosts: [{ name: a, domains: ["*"], routes: [{ match: { path_prefix: / }, cluster: c }] }]
clusters:
  - { name: c, endpoints: [127.0.0.1:9] }
`, testutil.Addr(t))
	applied, err := meshkitv1.NewConfigClient(apiConn(t, a.APIAddr().String())).Apply(ctx,
		&meshkitv1.ApplyRequest{Filename: "directory.yaml", Yaml: []byte(doc)})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, 25*time.Millisecond, "b follows the config applied on a", func() (bool, string) {
		_, v, err := b.MeshKit.Get(ctx)
		return err == nil && v == applied.GetVersion(), fmt.Sprint(v, err)
	})

	ackedADS(t, a.XDSAddr().String(), "pa1")
	ackedADS(t, a.XDSAddr().String(), "pa2")
	ackedADS(t, b.XDSAddr().String(), "pb1")
	leaveB := ackedADS(t, b.XDSAddr().String(), "mover")

	const all = "mover@b pa1@a pa2@a pb1@b"
	for _, p := range []*serve.Process{a, b} {
		testutil.Eventually(t, 10*time.Second, 25*time.Millisecond, "every proxy listed with its replica and ACK", func() (bool, string) {
			rows, acked := listing(t, p)
			if rows != all || len(acked) != 4 {
				return false, fmt.Sprintf("%s; acked %v", rows, acked)
			}
			for _, v := range acked {
				if !strings.HasPrefix(v, "omnirelay ") {
					return false, fmt.Sprintf("%s; acked %v", rows, acked)
				}
			}
			return true, ""
		})
	}

	// b dies: cut off etcd, it can neither revoke its lease nor delete the
	// entry of the proxy that now leaves it.
	cut := time.Now()
	relay.Cut()
	leaveB()
	ackedADS(t, a.XDSAddr().String(), "mover")
	direct, err := store.OpenEtcd(etcd, "/e2e-"+t.Name()+"/")
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	storedOnB := func() int {
		kvs, _, err := direct.List(ctx, meshkit.DirectoryPrefix+"b/s/")
		if err != nil {
			t.Fatal(err)
		}
		return len(kvs)
	}
	testutil.Eventually(t, 5*time.Second, 25*time.Millisecond, "the moved proxy listed once, on a", func() (bool, string) {
		rows, _ := listing(t, a)
		if strings.Count(rows, "mover@") > 1 {
			t.Fatalf("mover listed twice: %s", rows)
		}
		return rows == "mover@a pa1@a pa2@a pb1@b", rows
	})
	if n := storedOnB(); n != 2 {
		t.Fatalf("b's stored entries when the move was listed: %d, want 2 (mover's old entry and pb1's)", n)
	}
	t.Logf("move listed %v after the cut, b's stale entry for it still stored", time.Since(cut).Round(time.Millisecond))

	testutil.Eventually(t, meshkit.DefaultDirectoryTTL+10*time.Second, 25*time.Millisecond, "b's entries dropped when its lease expires", func() (bool, string) {
		rows, _ := listing(t, a)
		return rows == "mover@a pa1@a pa2@a", rows
	})
	gone := time.Since(cut)
	if n := storedOnB(); n != 0 {
		t.Fatalf("b still has %d stored entries", n)
	}
	if gone < meshkit.DefaultDirectoryTTL-2*time.Second {
		t.Fatalf("b's entries gone %v after the cut, before its lease could expire (TTL %v): revoked?", gone, meshkit.DefaultDirectoryTTL)
	}
	t.Logf("b's entries gone %v after the cut (lease TTL %v)", gone.Round(time.Millisecond), meshkit.DefaultDirectoryTTL)
}
