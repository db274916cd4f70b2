package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/omnirelay/omnirelay/internal/dataplane/app"
	"github.com/omnirelay/omnirelay/internal/dataplane/dsl"
	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters"
	"github.com/omnirelay/omnirelay/internal/dataplane/runtime"
	"github.com/omnirelay/omnirelay/internal/dataplane/stats"
	"github.com/omnirelay/omnirelay/internal/dataplane/xdsclient"
	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

// buildOmnictl builds the omnictl binary the rollout test drives, as an
// operator would run it.
func buildOmnictl(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "omnictl")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/omnictl")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build omnictl: %v\n%s", err, out)
	}
	return bin
}

// rolloutNodes returns n node ids, half of them in a 50% canary by proxies
// (by their hash), so that both sides are exercised.
func rolloutNodes(n int) (ids []string, in map[string]bool) {
	in = map[string]bool{}
	var nin, nout int
	for i := 0; len(ids) < n; i++ {
		id := fmt.Sprintf("rollout-%d", i)
		isIn := config.InProxyCanary(config.ProxyBucket(id), 50)
		if isIn && nin < n/2 {
			nin++
		} else if !isIn && nout < n-n/2 {
			nout++
		} else {
			continue
		}
		ids = append(ids, id)
		in[id] = isIn
	}
	return ids, in
}

// rolloutProxy is an OmniRelay proxy assembled as app.Start assembles one
// in xDS mode (the data plane's xDS client verifying MeshKit's signatures,
// its runtime, its filter registry with the extension factory verifying
// package signatures, the DSL runtime), with one difference: four proxies
// on one host cannot all bind the one listener address a shared config
// names, so each rewrites the listeners' port to its own before applying.
type rolloutProxy struct {
	addr string
	rt   *runtime.Runtime
	ef   *extension.Factory
}

func startRolloutProxy(t *testing.T, id, xdsAddr string, meshPub, extPub ed25519.PublicKey) *rolloutProxy {
	t.Helper()
	log := testutil.Logger(t).With("node", id)
	st := stats.New()
	m, err := extension.NewMetrics(st.Registry)
	if err != nil {
		t.Fatal(err)
	}
	ef, err := extension.NewFactory(extension.Options{Trust: signing.NewVerifier(extPub),
		Runtimes: []extension.Runtime{dsl.NewRuntime(dsl.Options{})}, Metrics: m, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := filter.NewRegistry(append(filters.Builtins(), ef)...)
	if err != nil {
		t.Fatal(err)
	}
	addr := testutil.Addr(t)
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	rt := runtime.New(runtime.Options{Log: log, Stats: st, Filters: reg, DrainTimeout: 2 * time.Second})
	client := xdsclient.New(xdsclient.Options{
		Address: xdsAddr, NodeID: id, Cluster: "e2e", Capabilities: app.Capabilities("e2e", reg),
		Verifier: signing.NewVerifier(meshPub), Log: log,
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
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = client.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = rt.Shutdown(sctx)
	})
	return &rolloutProxy{addr: addr, rt: rt, ef: ef}
}

// TestExtensionRollout: four OmniRelay proxies behind one MeshKit run
// extension stamp v1 under steady load. omnictl starts a canary of v2 by
// share of proxies at 50% (exactly the proxies whose node-id hash is below
// 50 get v2; omnictl get proxies says which got what), rolls it back,
// starts it again and promotes it; then a canary of v3 by share of requests
// (every proxy serves both), rolled back, started again and promoted. Not
// one request fails or sees a version other than those expected.
func TestExtensionRollout(t *testing.T) {
	if testing.Short() {
		t.Skip("starts MeshKit and four proxies, builds omnictl")
	}
	omnictl := buildOmnictl(t)
	dir := t.TempDir()
	meshPub, meshPriv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	extPub, extPriv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := signing.WritePrivateKey(filepath.Join(dir, "mesh.key"), meshPriv); err != nil {
		t.Fatal(err)
	}
	backendAddr := okBackend(t)
	mk := startSignedMeshKit(t, dir)
	cc := apiConn(t, mk.APIAddr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, v := range []string{"1", "2", "3"} {
		if _, err := extv1.NewPackagesClient(cc).Push(ctx, &extv1.PushRequest{Package: extPackage(t, v, extPriv)}); err != nil {
			t.Fatal(err)
		}
	}
	doc := fmt.Sprintf(`listeners:
  - name: edge
    address: 127.0.0.1:1
    filters: [{ extension: { name: stamp, package: "store:stamp@1.0.0", policy: fail_closed, deadline: 1s } }]
    virtual_hosts: [{ name: all, routes: [{ match: { path_prefix: / }, cluster: main }] }]
clusters: [{ name: main, endpoints: [%s] }]
`, backendAddr)
	if _, err := meshkitv1.NewConfigClient(cc).Apply(ctx, &meshkitv1.ApplyRequest{Filename: "mesh.yaml", Yaml: []byte(doc)}); err != nil {
		t.Fatal(err)
	}

	ids, inCanary := rolloutNodes(4)
	proxies := map[string]*rolloutProxy{}
	for _, id := range ids {
		proxies[id] = startRolloutProxy(t, id, mk.XDSAddr().String(), meshPub, extPub)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	t.Cleanup(client.CloseIdleConnections)
	version := func(id string) string {
		resp, err := client.Get("http://" + proxies[id].addr + "/")
		if err != nil {
			return "error: " + err.Error()
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Sprint(resp.StatusCode)
		}
		return resp.Header.Get("x-version")
	}
	// converge waits until each proxy answers only its wanted version
	// (20 requests in a row).
	converge := func(what string, want func(id string) string) {
		t.Helper()
		for _, id := range ids {
			testutil.Eventually(t, 15*time.Second, 25*time.Millisecond, what+" on "+id, func() (bool, string) {
				for range 20 {
					if v := version(id); v != want(id) {
						return false, v
					}
				}
				return true, ""
			})
		}
	}
	everywhere := func(v string) func(string) string { return func(string) string { return v } }
	converge("v1 runs", everywhere("1"))

	// Steady load on every proxy for the rest of the test; allowed holds
	// the versions a response may carry, changed only between steps.
	var allowed atomic.Pointer[map[string]bool]
	allow := func(vs ...string) {
		m := map[string]bool{}
		for _, v := range vs {
			m[v] = true
		}
		allowed.Store(&m)
	}
	allow("1", "2")
	var (
		sent, failed atomic.Int64
		failMu       sync.Mutex
		failures     []string
		stop         = make(chan struct{})
		wg           sync.WaitGroup
	)
	for _, id := range ids {
		for range 2 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					v := version(id)
					sent.Add(1)
					if !(*allowed.Load())[v] {
						failed.Add(1)
						failMu.Lock()
						if len(failures) < 10 {
							failures = append(failures, id+": "+v)
						}
						failMu.Unlock()
					}
				}
			})
		}
	}
	stopLoad := func() {
		close(stop)
		wg.Wait()
	}
	defer func() {
		select {
		case <-stop:
		default:
			stopLoad()
		}
	}()

	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(omnictl, append([]string{"--server", mk.APIAddr().String()}, args...)...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			t.Fatalf("omnictl %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
		}
		return out.String()
	}
	runFails := func(want string, args ...string) {
		t.Helper()
		out, err := exec.Command(omnictl, append([]string{"--server", mk.APIAddr().String()}, args...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) {
			t.Fatalf("omnictl %s: err %v, output %q; want a failure saying %q", strings.Join(args, " "), err, out, want)
		}
	}
	runFails("no canary to promote", "ext", "promote", "stamp")
	runFails("no canary to roll back", "ext", "rollback", "stamp")

	// Canary by proxies: exactly the hashed half gets v2.
	byHash := func(id string) string {
		if inCanary[id] {
			return "2"
		}
		return "1"
	}
	out := run("ext", "canary", "stamp", "--package", "store:stamp@2.0.0", "--percent", "50", "--by", "proxies")
	if !strings.Contains(out, "listeners[0].filters[0].extension") {
		t.Fatalf("canary output: %q", out)
	}
	converge("v2 on the proxies hashed below 50", byHash)
	testutil.Eventually(t, 5*time.Second, 25*time.Millisecond, "omnictl get proxies shows which version each proxy got", func() (bool, string) {
		var listed meshkitv1.ListProxiesResponse
		if err := protojson.Unmarshal([]byte(run("get", "proxies", "-o", "json")), &listed); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, p := range listed.GetProxies() {
			for _, x := range p.GetExtensions() {
				got[p.GetNodeId()] = x.GetPackage() + " " + x.GetRole()
			}
		}
		for _, id := range ids {
			want := "store:stamp@" + byHash(id) + ".0.0 " + map[bool]string{true: "canary", false: "previous"}[inCanary[id]]
			if got[id] != want {
				return false, fmt.Sprint(got)
			}
		}
		return true, ""
	})
	if table := run("get", "proxies"); !strings.Contains(table, "stamp=store:stamp@2.0.0 (canary 50%)") ||
		!strings.Contains(table, "stamp=store:stamp@1.0.0 (previous 50%)") {
		t.Fatalf("get proxies table:\n%s", table)
	}

	run("ext", "rollback", "stamp")
	converge("rollback restores v1 everywhere", everywhere("1"))
	run("ext", "canary", "stamp", "--package", "store:stamp@2.0.0", "--percent", "50", "--by", "proxies")
	converge("canary by proxies again", byHash)
	run("ext", "promote", "stamp")
	converge("promotion puts v2 everywhere", everywhere("2"))

	// Canary by requests: every proxy serves both versions.
	allow("2", "3")
	run("ext", "canary", "stamp", "--package", "store:stamp@3.0.0", "--percent", "30")
	for _, id := range ids {
		testutil.Eventually(t, 15*time.Second, 25*time.Millisecond, "both versions served by "+id, func() (bool, string) {
			seen := map[string]int{}
			for range 40 {
				seen[version(id)]++
			}
			return seen["2"] > 0 && seen["3"] > 0, fmt.Sprint(seen)
		})
	}
	run("ext", "rollback", "stamp")
	converge("rollback of the request canary", everywhere("2"))
	run("ext", "canary", "stamp", "--package", "store:stamp@3.0.0", "--percent", "30")
	run("ext", "promote", "stamp")
	converge("promotion of the request canary", everywhere("3"))

	stopLoad()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed or saw an unexpected version during the rollouts: %v", failed.Load(), sent.Load(), failures)
	}
	t.Logf("%d requests through the rollouts, none failed", sent.Load())

	// The versions replaced along the way were released: each proxy holds
	// one loaded plugin, v3's (after a collection: see extension.Factory).
	// An idle keep-alive connection keeps the version of its last request
	// reachable until its next request, so the client's are closed first.
	client.CloseIdleConnections()
	for _, id := range ids {
		testutil.Eventually(t, 10*time.Second, 25*time.Millisecond, "replaced plugins released on "+id, func() (bool, string) {
			goruntime.GC()
			n := proxies[id].ef.Loaded()
			return n == 1, fmt.Sprintf("%d loads held", n)
		})
	}
}
