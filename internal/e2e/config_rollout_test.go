package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/omnirelay/omnirelay/internal/controlplane/rollout"
	"github.com/omnirelay/omnirelay/internal/controlplane/serve"
	"github.com/omnirelay/omnirelay/internal/controlplane/versions"
	"github.com/omnirelay/omnirelay/internal/dataplane/app"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters"
	"github.com/omnirelay/omnirelay/internal/dataplane/loadreport"
	"github.com/omnirelay/omnirelay/internal/dataplane/runtime"
	"github.com/omnirelay/omnirelay/internal/dataplane/stats"
	"github.com/omnirelay/omnirelay/internal/dataplane/xdsclient"
	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
	"github.com/omnirelay/omnirelay/internal/testutil"
	"github.com/omnirelay/omnirelay/internal/testutil/meshtest"
)

// lrsProxy is an OmniRelay proxy assembled as app.Start assembles one in
// xDS mode (xDS client, runtime, built-in filters, the load reporter on the
// same control plane), except that it rewrites the listeners' port to its
// own: four proxies on one host cannot share one listener address.
type lrsProxy struct {
	id   string
	addr string
	rt   *runtime.Runtime
}

func startLRSProxy(t *testing.T, id, xdsAddr string) *lrsProxy {
	t.Helper()
	log := testutil.Logger(t).With("node", id)
	st := stats.New()
	reg, err := filter.NewRegistry(filters.Builtins()...)
	if err != nil {
		t.Fatal(err)
	}
	addr := testutil.Addr(t)
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	rt := runtime.New(runtime.Options{Log: log, Stats: st, Filters: reg, DrainTimeout: 2 * time.Second})
	caps := app.Capabilities("e2e", reg)
	client := xdsclient.New(xdsclient.Options{
		Address: xdsAddr, NodeID: id, Cluster: "e2e", Capabilities: caps, Log: log,
		Backoff: xdsclient.Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond},
		Apply: func(snap *resources.Snapshot, version string) error {
			own := *snap
			own.Listeners = make([]*listenerv3.Listener, len(snap.Listeners))
			for i, l := range snap.Listeners {
				l = proto.Clone(l).(*listenerv3.Listener)
				l.GetAddress().GetSocketAddress().PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: uint32(port)}
				own.Listeners[i] = l
			}
			err := rt.Apply(&own, "xds:"+version)
			if errors.Is(err, runtime.ErrUnchanged) {
				return nil
			}
			return err
		},
	})
	node := &corev3.Node{Id: id, Cluster: "e2e"}
	caps.Apply(node)
	reporter := loadreport.New(loadreport.Options{Address: xdsAddr, Node: node, Gatherer: st.Registry, Log: log, Retry: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = client.Run(ctx) })
	wg.Go(func() { _ = reporter.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = rt.Shutdown(sctx)
	})
	return &lrsProxy{id: id, addr: addr, rt: rt}
}

// routesTo reports whether the proxy's route now leads to backend (its
// x-backend answer header).
func (p *lrsProxy) routesTo(backend string) bool {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.addr + "/")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.Header.Get("x-backend") == backend
}

// load sends requests to every proxy (two at a time each) until stop, counting each proxy's
// answers and failures (anything but a 200).
type load struct {
	ok, failed []atomic.Int64
	stop       context.CancelFunc
	wg         sync.WaitGroup
}

func startLoad(t *testing.T, proxies []*lrsProxy) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{ok: make([]atomic.Int64, len(proxies)), failed: make([]atomic.Int64, len(proxies)), stop: cancel}
	client := &http.Client{Timeout: 5 * time.Second}
	// Two workers per proxy, so that a slow canary still sends enough
	// requests for a verdict within the window.
	for w := range 2 * len(proxies) {
		i, p := w%len(proxies), proxies[w%len(proxies)]
		l.wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+"/", nil)
				resp, err := client.Do(req)
				if ctx.Err() != nil {
					return
				}
				if err == nil {
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != http.StatusOK {
					l.failed[i].Add(1)
				} else {
					l.ok[i].Add(1)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	t.Cleanup(l.halt)
	return l
}

func (l *load) halt() { l.stop(); l.wg.Wait() }

func (l *load) failures() (per []int64, total int64) {
	for i := range l.failed {
		per = append(per, l.failed[i].Load())
		total += per[i]
	}
	return per, total
}

// bucketNodes returns node ids, one per wanted canary bucket range.
func bucketNodes(ranges ...[2]uint32) []string {
	var ids []string
	for _, r := range ranges {
		for i := 0; ; i++ {
			id := fmt.Sprintf("lrs-%d-%d", r[0], i)
			if b := config.ProxyBucket(id); b >= r[0] && b < r[1] {
				ids = append(ids, id)
				break
			}
		}
	}
	return ids
}

func rolloutDocFor(cluster string, clusters map[string]string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "listeners:\n  - name: web\n    address: 127.0.0.1:1\n    virtual_hosts: [{ name: all, domains: [\"*\"], routes: [{ match: { path_prefix: / }, cluster: %s }] }]\nclusters:\n", cluster)
	for _, name := range []string{"good", "good2", "bad", "slow"} {
		fmt.Fprintf(&b, "  - { name: %s, endpoints: [%s] }\n", name, clusters[name])
	}
	return []byte(b.String())
}

// TestConfigRolloutGates: MeshKit and four OmniRelay proxies under load
// (one proxy in a 25 % canary, one more at 50 %, two outside any canary
// below 100 %). Each proxy reports its load over LRS every second. A good
// route change is promoted through every step with no failed request; a
// route change to a cluster answering 500, and one to a cluster 200 ms
// slower, are rolled back automatically at the first step by the gates.
//
// The bound on failed requests of a bad change: only the canary proxy's
// requests fail, and only from the moment it applies the change until it
// applies the rollback: at most its request rate times (report interval +
// window + the rollback's propagation, asserted below 1 s). The test
// asserts that no proxy outside the canary failed a request and that the
// canary proxy's failures fit that bound.
func TestConfigRolloutGates(t *testing.T) {
	backends := map[string]string{}
	for _, name := range []string{"good", "good2"} {
		backends[name] = testutil.StartBackend(t, name, nil).Addr
	}
	backends["bad"] = testutil.StartBackend(t, "bad", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) }).Addr
	backends["slow"] = testutil.StartBackend(t, "slow", func(w http.ResponseWriter, _ *http.Request) { time.Sleep(200 * time.Millisecond) }).Addr
	dir := t.TempDir()
	mk := meshtest.Start(t, serve.Options{XDSAddress: "127.0.0.1:0", APIAddress: "127.0.0.1:0", DataDir: dir, ReplicaID: "e2e", Log: testutil.Logger(t)})
	ctx := context.Background()
	if _, err := mk.MeshKit.ApplyVersion(ctx, "mesh.yaml", rolloutDocFor("good", backends), versions.OriginApply); err != nil {
		t.Fatal(err)
	}
	ids := bucketNodes([2]uint32{0, 25}, [2]uint32{25, 50}, [2]uint32{50, 100}, [2]uint32{50, 100})
	ids[3] = bucketNodes([2]uint32{60, 100})[0] + "x"
	for config.ProxyBucket(ids[3]) < 50 || ids[3] == ids[2] {
		ids[3] += "x"
	}
	var proxies []*lrsProxy
	for _, id := range ids {
		proxies = append(proxies, startLRSProxy(t, id, mk.XDSAddr().String()))
	}
	// The latency gate is a ratio: on a loaded test machine the absolute
	// p99 of healthy requests varies too much for a fixed bound.
	const window, interval = 3 * time.Second, time.Second
	gates := rollout.Gates{Window: window, MinRequests: 15, MaxErrorRate: 0.05, MaxP99Ratio: 4}
	plan := rollout.Plan{Steps: []uint32{25, 50, 100}, Pause: 2 * time.Second, Gates: gates}

	serving := func(backend string, ps ...*lrsProxy) {
		t.Helper()
		testutil.Eventually(t, 15*time.Second, 5*time.Millisecond, "proxies route to "+backend, func() (bool, string) {
			for _, p := range ps {
				if !p.routesTo(backend) {
					return false, p.id + " does not"
				}
			}
			return true, ""
		})
	}
	serving("good", proxies...)

	t.Run("good change promoted", func(t *testing.T) {
		l := startLoad(t, proxies)
		next := rolloutDocFor("good2", backends)
		if _, err := mk.MeshKit.StartRollout(ctx, "mesh.yaml", next, plan, versions.OriginApply); err != nil {
			t.Fatal(err)
		}
		s := waitRollout(t, mk, rollout.Promoted, 30*time.Second)
		serving("good2", proxies...)
		l.halt()
		if per, total := l.failures(); total != 0 {
			t.Fatalf("%d requests failed during a good rollout (per proxy %v)", total, per)
		}
		t.Logf("promoted as version %d: %s", s.Promoted, s.Reason)
	})
	for _, tc := range []struct{ name, cluster, reason string }{
		{"500s rolled back", "bad", "error rate"},
		{"200 ms slower rolled back", "slow", "p99"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := startLoad(t, proxies)
			time.Sleep(500 * time.Millisecond)
			okBefore := l.ok[0].Load()
			start := time.Now()
			next := rolloutDocFor(tc.cluster, backends)
			if _, err := mk.MeshKit.StartRollout(ctx, "mesh.yaml", next, plan, versions.OriginApply); err != nil {
				t.Fatal(err)
			}
			s := waitRollout(t, mk, rollout.RolledBack, 30*time.Second)
			// Measured: from the failing verdict (the rollback's write) to
			// every proxy serving the stable version again.
			serving("good2", proxies...)
			propagated := time.Since(s.Ended)
			elapsed := time.Since(start)
			l.halt()
			if !strings.Contains(s.Reason, tc.reason) || !strings.Contains(s.Reason, "at 25%") {
				t.Fatalf("rolled back for %q, want %q at the first step", s.Reason, tc.reason)
			}
			per, total := l.failures()
			for i := 1; i < len(per); i++ {
				if per[i] != 0 {
					t.Fatalf("proxy %s outside the canary failed %d requests (per proxy %v)", ids[i], per[i], per)
				}
			}
			// The canary proxy's rate before the rollout, per second.
			rate := float64(okBefore) / 0.5
			bound := int64(rate * (interval + window + time.Second).Seconds())
			if tc.cluster == "slow" {
				bound = 0 // slow answers are not failures
			}
			if total > bound {
				t.Fatalf("%d requests failed, bound %d (rate %.0f/s × (interval %v + window %v + 1 s))", total, bound, rate, interval, window)
			}
			if propagated > time.Second {
				t.Fatalf("rollback reached every proxy %v after the gate failed", propagated)
			}
			t.Logf("rolled back %v after the start, every proxy on the stable version %v after the failing verdict; %d requests failed (bound %d): %s",
				elapsed.Round(time.Millisecond), propagated.Round(time.Millisecond), total, bound, s.Reason)
		})
	}
}

func waitRollout(t *testing.T, mk *serve.Process, want rollout.Phase, within time.Duration) *rollout.State {
	t.Helper()
	var s *rollout.State
	testutil.Eventually(t, within, 20*time.Millisecond, "rollout "+string(want), func() (bool, string) {
		var err error
		s, err = mk.MeshKit.Rollout(context.Background())
		if err != nil {
			return false, err.Error()
		}
		return s.Phase == want, fmt.Sprintf("%s at %d%%: %s %v", s.Phase, s.Percent(), s.Reason, s.Verdict)
	})
	return s
}
