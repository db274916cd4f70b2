package loadreport

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/omnirelay/omnirelay/internal/dataplane/stats"
	"github.com/omnirelay/omnirelay/internal/shared/loadmetrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// lrsServer is a real LRS server on 127.0.0.1 that keeps what it gets.
type lrsServer struct {
	lrsv3.UnimplementedLoadReportingServiceServer
	mu      sync.Mutex
	node    *corev3.Node
	reports []*lrsv3.LoadStatsRequest
}

func (s *lrsServer) StreamLoadStats(st lrsv3.LoadReportingService_StreamLoadStatsServer) error {
	first, err := st.Recv()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.node = first.GetNode()
	s.mu.Unlock()
	if err := st.Send(&lrsv3.LoadStatsResponse{SendAllClusters: true, LoadReportingInterval: durationpb.New(20 * time.Millisecond)}); err != nil {
		return err
	}
	for {
		req, err := st.Recv()
		if err != nil {
			return nil
		}
		s.mu.Lock()
		s.reports = append(s.reports, req)
		s.mu.Unlock()
	}
}

// totals sums every report received so far.
func (s *lrsServer) totals() (clusters, listeners map[string][2]uint64, latency map[string]uint64, classes map[string]uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	clusters, listeners, latency, classes = map[string][2]uint64{}, map[string][2]uint64{}, map[string]uint64{}, map[string]uint64{}
	for _, r := range s.reports {
		for _, cs := range r.GetClusterStats() {
			m := clusters
			if cs.GetClusterServiceName() == loadmetrics.ListenerService {
				m = listeners
			}
			for _, ls := range cs.GetUpstreamLocalityStats() {
				v := m[cs.GetClusterName()]
				v[0] += ls.GetTotalSuccessfulRequests()
				v[1] += ls.GetTotalErrorRequests()
				m[cs.GetClusterName()] = v
				for _, lm := range ls.GetLoadMetricStats() {
					if _, ok := loadmetrics.ParseBucket(lm.GetMetricName()); ok {
						latency[lm.GetMetricName()] += lm.GetNumRequestsFinishedWithMetric()
					} else {
						classes[lm.GetMetricName()] += lm.GetNumRequestsFinishedWithMetric()
					}
				}
			}
		}
	}
	return
}

func TestReporter(t *testing.T) {
	srv := &lrsServer{}
	g := grpc.NewServer()
	lrsv3.RegisterLoadReportingServiceServer(g, srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	defer g.Stop()

	st := stats.New()
	shop, web := st.Cluster("shop"), st.Listener("web")
	// Counted before the stream opens: not reported.
	shop.Response(200)
	web.Request(200)

	ctx, cancel := context.WithCancel(context.Background())
	r := New(Options{Address: "127.0.0.1:1," + ln.Addr().String(), Node: &corev3.Node{Id: "proxy-1"}, Gatherer: st.Registry, Retry: 10 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		srv.mu.Lock()
		up := srv.node != nil
		srv.mu.Unlock()
		if up {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no stream opened")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the first read is taken when the stream opens
	for range 7 {
		shop.Response(200)
		web.Request(200)
		web.Duration.Observe(0.004)
	}
	for range 3 {
		shop.Response(503)
		web.Request(503)
		web.Duration.Observe(0.3)
	}
	shop.Timeouts.Inc()
	shop.Resets.Inc()
	for {
		c, l, lat, cls := srv.totals()
		if c["shop"] == [2]uint64{7, 5} && l[loadmetrics.ListenerPrefix+"web"] == [2]uint64{7, 3} &&
			lat[loadmetrics.BucketName(loadmetrics.BucketOf(4))] == 7 && lat[loadmetrics.BucketName(loadmetrics.BucketOf(300))] == 3 &&
			cls[loadmetrics.ErrorPrefix+"5xx"] == 3 && cls[loadmetrics.ErrorPrefix+"timeout"] == 1 && cls[loadmetrics.ErrorPrefix+"reset"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reported clusters %v listeners %v latency %v classes %v", c, l, lat, cls)
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv.mu.Lock()
	if srv.node.GetId() != "proxy-1" {
		t.Fatalf("node %v", srv.node)
	}
	srv.mu.Unlock()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestReporterUnimplemented: a control plane without LRS makes the
// reporter wait, not spin.
func TestReporterUnimplemented(t *testing.T) {
	g := grpc.NewServer() // no services
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	defer g.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	r := New(Options{Address: ln.Addr().String(), Node: &corev3.Node{Id: "p"}, Gatherer: stats.New().Registry, Retry: time.Millisecond})
	start := time.Now()
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 250*time.Millisecond {
		t.Fatal("Run returned before its context ended")
	}
}
