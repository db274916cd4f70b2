package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/controlplane/serve"
	"github.com/omnirelay/omnirelay/internal/controlplane/store/etcdtest"
	dpdemo "github.com/omnirelay/omnirelay/internal/dataplane/demo"
	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
	"github.com/omnirelay/omnirelay/internal/testutil"
	"github.com/omnirelay/omnirelay/internal/testutil/meshtest"
)

func startReplica(t *testing.T, etcd []string, key, id string) *serve.Process {
	t.Helper()
	p := meshtest.Start(t, serve.Options{
		XDSAddress: "127.0.0.1:0", APIAddress: "127.0.0.1:0",
		Etcd: etcd, EtcdPrefix: "/e2e-" + t.Name() + "/", SigningKey: key, ReplicaID: id,
		Log: testutil.Logger(t).With("replica", id),
	})
	return p
}

// TestMeshReplicasOnEtcd: two MeshKit replicas share a real (embedded) etcd.
// A config applied on one reaches proxies connected to the other; killing
// the replica a proxy is connected to, the proxy moves to the other without
// a failed request, and keeps following changes.
func TestMeshReplicasOnEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an embedded etcd, two MeshKits and two proxies")
	}
	etcd := etcdtest.StartEtcd(t)
	dir := t.TempDir()
	key, trust := filepath.Join(dir, "signing.key"), filepath.Join(dir, "trust.pem")
	pk, sk, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := signing.WritePrivateKey(key, sk); err != nil {
		t.Fatal(err)
	}
	if err := signing.WritePublicKey(trust, pk); err != nil {
		t.Fatal(err)
	}
	c := newMeshConfig(t)
	stop, err := dpdemo.StartBackends(c.backends())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)

	a := startReplica(t, etcd, key, "a")
	b := startReplica(t, etcd, key, "b")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := meshkitv1.NewConfigClient(apiConn(t, b.APIAddr().String())).Apply(ctx,
		&meshkitv1.ApplyRequest{Filename: "replicas.yaml", Yaml: c.YAML()}); err != nil {
		t.Fatal(err)
	}

	// p1 knows both replicas and connects to the first.
	p1 := startProxy(t, a.XDSAddr().String()+","+b.XDSAddr().String(), "p1", trust, t.TempDir(), testutil.Addr(t), false)
	testutil.Eventually(t, 10*time.Second, 25*time.Millisecond, "p1 runs the config applied on replica b", func() (bool, string) {
		return p1.ListenerAddr("web") != nil, fmt.Sprintf("no web listener; xds status %+v", p1.XDS.Status())
	})
	counts := spread(t, c.Web, 20)
	if counts["shop-v1-a"]+counts["shop-v1-b"]+counts["shop-v2"] != 20 {
		t.Fatalf("traffic through p1: %v", counts)
	}
	proxies := func(p *serve.Process) []string {
		var ids []string
		for _, s := range p.MeshKit.Proxies() {
			ids = append(ids, s.NodeID)
		}
		return ids
	}
	if got := proxies(a); len(got) != 1 || got[0] != "p1" {
		t.Fatalf("replica a's proxies = %v, want [p1]", got)
	}

	// Steady load through p1 while its replica dies.
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		client := &http.Client{Timeout: 5 * time.Second}
		for loadCtx.Err() == nil {
			sent.Add(1)
			if _, err := get(client, c.Web, "/", nil); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	time.Sleep(200 * time.Millisecond)
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	if err := a.Shutdown(sctx); err != nil {
		t.Logf("replica a shutdown: %v", err)
	}
	scancel()
	testutil.Eventually(t, 15*time.Second, 25*time.Millisecond, "p1 reconnects to replica b", func() (bool, string) {
		got := proxies(b)
		return len(got) == 1 && got[0] == "p1", fmt.Sprint(got)
	})
	// A change applied on b reaches p1 through its new stream.
	c2 := c
	c2.WeightV1, c2.WeightV2 = 0, 100
	if _, err := meshkitv1.NewConfigClient(apiConn(t, b.APIAddr().String())).Apply(ctx,
		&meshkitv1.ApplyRequest{Filename: "replicas-2.yaml", Yaml: c2.YAML()}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, 25*time.Millisecond, "p1 follows replica b", func() (bool, string) {
		counts := spread(t, c.Web, 10)
		return counts["shop-v2"] == 10, fmt.Sprint(counts)
	})
	stopLoad()
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed across the failover (first: %v)", failed.Load(), sent.Load(), firstErr.Load())
	}
	t.Logf("%d requests across the failover, none failed", sent.Load())
}
