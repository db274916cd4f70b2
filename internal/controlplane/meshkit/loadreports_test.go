package meshkit

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/omnirelay/omnirelay/internal/controlplane/rollout"
	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	"github.com/omnirelay/omnirelay/internal/controlplane/store/etcdtest"
	"github.com/omnirelay/omnirelay/internal/controlplane/versions"
	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/loadmetrics"
)

// reporter is one proxy sending LRS reports every interval, as OmniRelay
// does (with latency figures) or as Envoy does (withLatency false): its
// requests fail at the rate and take the latency that behave says, by
// the side of the rollout its bucket is on.
type reporter struct {
	node        *corev3.Node
	withLatency bool
}

type behaviour func(canary bool) (errRate float64, latency time.Duration)

func (r reporter) run(ctx context.Context, t *testing.T, addr string, m *MeshKit, behave behaviour) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close()
	stream, err := lrsv3.NewLoadReportingServiceClient(conn).StreamLoadStats(ctx)
	if err != nil {
		t.Error(err)
		return
	}
	if err := stream.Send(&lrsv3.LoadStatsRequest{Node: r.node}); err != nil {
		t.Error(err)
		return
	}
	resp, err := stream.Recv()
	if err != nil {
		if ctx.Err() == nil {
			t.Error(err)
		}
		return
	}
	if !resp.GetSendAllClusters() || resp.GetLoadReportingInterval().AsDuration() != 50*time.Millisecond {
		t.Errorf("LRS answer: %v", resp)
		return
	}
	bucket := config.ProxyBucket(r.node.GetId())
	for {
		select {
		case <-ctx.Done():
			_ = stream.CloseSend()
			return
		case <-time.After(50 * time.Millisecond):
		}
		m.mu.Lock()
		st := m.staged
		m.mu.Unlock()
		canary := st != nil && config.InProxyCanary(bucket, st.percent)
		errRate, lat := behave(canary)
		const n = 20
		bad := uint64(errRate * n)
		ls := &endpointv3.UpstreamLocalityStats{TotalSuccessfulRequests: n - bad, TotalErrorRequests: bad}
		if r.withLatency {
			ls.LoadMetricStats = []*endpointv3.EndpointLoadMetricStats{{
				MetricName:                    loadmetrics.BucketName(loadmetrics.BucketOf(float64(lat.Milliseconds()))),
				NumRequestsFinishedWithMetric: n, TotalMetricValue: float64(n * lat.Milliseconds()),
			}, {MetricName: loadmetrics.ErrorPrefix + loadmetrics.Class5xx, NumRequestsFinishedWithMetric: bad}}
		}
		if err := stream.Send(&lrsv3.LoadStatsRequest{ClusterStats: []*endpointv3.ClusterStats{{ClusterName: "shop", UpstreamLocalityStats: []*endpointv3.UpstreamLocalityStats{ls}}}}); err != nil {
			return
		}
	}
}

func TestRolloutGates(t *testing.T) {
	gates := rollout.Gates{Window: time.Second, MinRequests: 50, MaxErrorRate: 0.05, MaxErrorRatio: 3, MaxP99: 150 * time.Millisecond, MaxP99Ratio: 3}
	healthy := func(bool) (float64, time.Duration) { return 0, 5 * time.Millisecond }
	tests := []struct {
		name      string
		transport string
		behave    behaviour
		envoy     bool
		want      rollout.Phase
		reason    string
	}{
		{name: "good change promoted", transport: "lean", behave: healthy, want: rollout.Promoted},
		{name: "errors rolled back", transport: "lean", want: rollout.RolledBack, reason: "error rate 50.00% > 5.00%",
			behave: func(c bool) (float64, time.Duration) {
				if c {
					return 0.5, 5 * time.Millisecond
				}
				return 0, 5 * time.Millisecond
			}},
		{name: "slow rolled back", transport: "grpc", want: rollout.RolledBack, reason: "p99 ",
			behave: func(c bool) (float64, time.Duration) {
				if c {
					return 0, 205 * time.Millisecond
				}
				return 0, 5 * time.Millisecond
			}},
		{name: "errors from envoy rolled back", transport: "grpc", envoy: true, want: rollout.RolledBack, reason: "error rate",
			behave: func(c bool) (float64, time.Duration) {
				if c {
					return 0.5, 0
				}
				return 0, 0
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := store.OpenBolt(filepath.Join(t.TempDir(), "meshkit.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			m := New(Options{Store: st, Log: slog.New(slog.DiscardHandler), LoadReportInterval: 50 * time.Millisecond, Directory: DirectoryOptions{ReplicaID: "a"}})
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			defer func() { cancel(); wg.Wait() }()
			wg.Go(func() { _ = m.Run(ctx) })
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			if tc.transport == "lean" {
				wg.Go(func() { _ = m.Server().Serve(ln) })
				defer m.Server().Stop()
			} else {
				g := grpc.NewServer()
				m.Server().Register(g)
				wg.Go(func() { _ = g.Serve(ln) })
				defer g.Stop()
			}
			if _, err := m.ApplyVersion(ctx, "mesh.yaml", historyDoc(1), versions.OriginApply); err != nil {
				t.Fatal(err)
			}
			// Eight reporters: buckets 3 and 7 are in the 10 % canary.
			for _, b := range []uint32{3, 7, 20, 35, 60, 70, 85, 99} {
				r := reporter{node: nodeInBucket(t, b), withLatency: !tc.envoy}
				if tc.envoy {
					r.node = &corev3.Node{Id: r.node.GetId(), UserAgentName: "envoy"}
				}
				wg.Go(func() { r.run(ctx, t, ln.Addr().String(), m, tc.behave) })
			}
			// Envoy nodes are outside every canary below 100 %: at 100 %
			// they all are in it (the ratio gates are then skipped).
			steps := []uint32{10, 50}
			if tc.envoy {
				steps = []uint32{100}
			}
			start := time.Now()
			if _, err := m.StartRollout(ctx, "mesh.yaml", historyDoc(2), rollout.Plan{Steps: steps, Pause: 300 * time.Millisecond, Gates: gates}, versions.OriginApply); err != nil {
				t.Fatal(err)
			}
			s := waitPhase(t, m, tc.want)
			took := time.Since(start)
			if !strings.Contains(s.Reason, tc.reason) {
				t.Fatalf("reason %q, want it to mention %q", s.Reason, tc.reason)
			}
			if tc.want == rollout.RolledBack && took > 5*time.Second {
				t.Fatalf("rolled back after %v", took)
			}
			t.Logf("%s after %v: %s", s.Phase, took.Round(time.Millisecond), s.Reason)
		})
	}
}

// TestRolloutGatesAcrossReplicas: two MeshKits on one etcd; every proxy
// reports to the replica that does not lead the rollouts. The leader
// judges their reports from the store (shared every second) and rolls a
// change whose canary fails back.
func TestRolloutGatesAcrossReplicas(t *testing.T) {
	endpoints := etcdtest.StartEtcd(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var ms []*MeshKit
	var addrs []string
	for _, id := range []string{"a", "b"} {
		st, err := store.OpenEtcd(endpoints, "/meshkit")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		m := New(Options{Store: st, Log: slog.New(slog.DiscardHandler), LoadReportInterval: 50 * time.Millisecond, Directory: DirectoryOptions{ReplicaID: id}})
		wg.Go(func() { _ = m.Run(ctx) })
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { _ = m.Server().Serve(ln) })
		defer m.Server().Stop()
		ms, addrs = append(ms, m), append(addrs, ln.Addr().String())
	}
	deadline := time.Now().Add(10 * time.Second)
	for !ms[0].LeadsRollouts() && !ms[1].LeadsRollouts() {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(5 * time.Millisecond)
	}
	follower := 0
	if ms[0].LeadsRollouts() {
		follower = 1
	}
	if _, err := ms[0].ApplyVersion(ctx, "mesh.yaml", historyDoc(1), versions.OriginApply); err != nil {
		t.Fatal(err)
	}
	bad := func(c bool) (float64, time.Duration) {
		if c {
			return 0.5, 5 * time.Millisecond
		}
		return 0, 5 * time.Millisecond
	}
	for _, b := range []uint32{3, 7, 20, 60, 99} {
		r := reporter{node: nodeInBucket(t, b), withLatency: true}
		wg.Go(func() { r.run(ctx, t, addrs[follower], ms[follower], bad) })
	}
	gates := rollout.Gates{Window: 2 * time.Second, MinRequests: 50, MaxErrorRate: 0.05}
	if _, err := ms[0].StartRollout(ctx, "mesh.yaml", historyDoc(2), rollout.Plan{Steps: []uint32{10, 50}, Pause: time.Hour, Gates: gates}, versions.OriginApply); err != nil {
		t.Fatal(err)
	}
	s := waitPhase(t, ms[1-follower], rollout.RolledBack)
	if !strings.Contains(s.Reason, "error rate 50.00% > 5.00%") {
		t.Fatalf("reason %q", s.Reason)
	}
}
