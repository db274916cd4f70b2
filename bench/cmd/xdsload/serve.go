package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	gcpcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	gcpserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/controlplane/xdsserver"
)

// stats is what the serving process reports to the driver over its control
// listener. Memory figures are taken after a GC and after freed pages were
// returned to the OS, so that deltas reflect live memory.
type stats struct {
	RSS        int64 `json:"rss"`
	HeapInuse  int64 `json:"heap_inuse"`
	StackInuse int64 `json:"stack_inuse"`
	HeapObjs   int64 `json:"heap_objects"`
	Goroutines int   `json:"goroutines"`
	CPUNanos   int64 `json:"cpu_ns"`
	Acks       int64 `json:"acks"`
}

type updateResult struct {
	T0       int64 `json:"t0_ns"` // wall clock just before the cache update
	CPUNanos int64 `json:"cpu_ns"`
	SetNanos int64 `json:"set_ns"` // time spent in the cache update call itself
}

// world builds the benchmark's resource set: clusters c0..cN-1 using EDS over
// ADS, each with e endpoints; c0's first endpoint port carries the update
// number, so each update changes exactly one endpoint.
func world(clusters, endpoints int, seq int) (cds, eds []*anypb.Any, names []string, err error) {
	for i := range clusters {
		name := "c" + strconv.Itoa(i)
		c, err := anypb.New(&clusterv3.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			}},
		})
		if err != nil {
			return nil, nil, nil, err
		}
		var lbs []*endpointv3.LbEndpoint
		for j := range endpoints {
			port := uint32(20000 + j)
			if i == 0 && j == 0 {
				port = uint32(30000 + seq%30000)
			}
			lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: fmt.Sprintf("10.0.%d.%d", i%250, j%250), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
				}}},
			}}})
		}
		e, err := anypb.New(&endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			Locality: &corev3.Locality{Region: "r1", Zone: "z1"}, LbEndpoints: lbs,
		}}})
		if err != nil {
			return nil, nil, nil, err
		}
		cds, eds, names = append(cds, c), append(eds, e), append(names, name)
	}
	return cds, eds, names, nil
}

// publisher applies update number seq to the implementation under test.
type publisher func(seq int) error

// serveOmni sets up MeshKit's xdsserver; the caller serves it on g (the
// grpc-go transport) or with srv.Serve (the lean transport).
func serveOmni(acks *atomic.Int64, clusters, endpoints int) (*xdsserver.Server, publisher, error) {
	cache := xdsserver.NewCache()
	srv := xdsserver.New(xdsserver.Options{
		Cache:     cache,
		Group:     func(*corev3.Node) (string, error) { return "all", nil },
		Callbacks: xdsserver.Callbacks{OnAck: func(int64, *corev3.Node, string, string) { acks.Add(1) }},
	})
	pub := func(seq int) error {
		cds, eds, names, err := world(clusters, endpoints, seq)
		if err != nil {
			return err
		}
		s := &xdsserver.Snapshot{Version: strconv.Itoa(seq), Resources: map[string][]*xdsserver.Resource{}}
		for i, n := range names {
			s.Resources[resourcev3.ClusterType] = append(s.Resources[resourcev3.ClusterType], &xdsserver.Resource{Name: n, Body: cds[i]})
			s.Resources[resourcev3.EndpointType] = append(s.Resources[resourcev3.EndpointType], &xdsserver.Resource{Name: n, Body: eds[i]})
		}
		cache.Set("all", s)
		return nil
	}
	return srv, pub, pub(0)
}

type constHash struct{}

func (constHash) ID(*corev3.Node) string { return "all" }

func serveGCP(ctx context.Context, g *grpc.Server, acks *atomic.Int64, clusters, endpoints int) (publisher, error) {
	cache := gcpcache.NewSnapshotCache(true, constHash{}, nil)
	cb := gcpserver.CallbackFuncs{
		StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
			if r.ResponseNonce != "" && r.ErrorDetail == nil {
				acks.Add(1)
			}
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			if r.ResponseNonce != "" && r.ErrorDetail == nil {
				acks.Add(1)
			}
			return nil
		},
	}
	srv := gcpserver.NewServer(ctx, cache, cb)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	pub := func(seq int) error {
		cds, eds, _, err := world(clusters, endpoints, seq)
		if err != nil {
			return err
		}
		res := map[resourcev3.Type][]types.Resource{}
		for i := range cds {
			var c clusterv3.Cluster
			var e endpointv3.ClusterLoadAssignment
			if err := cds[i].UnmarshalTo(&c); err != nil {
				return err
			}
			if err := eds[i].UnmarshalTo(&e); err != nil {
				return err
			}
			res[resourcev3.ClusterType] = append(res[resourcev3.ClusterType], &c)
			res[resourcev3.EndpointType] = append(res[resourcev3.EndpointType], &e)
		}
		snap, err := gcpcache.NewSnapshot(strconv.Itoa(seq), res)
		if err != nil {
			return err
		}
		return cache.SetSnapshot(ctx, "all", snap)
	}
	return pub, pub(0)
}

// serve runs the server under test until ctx ends: xDS on addr, the driver's
// control API (GET /stats, POST /update) on ctl.
func serve(ctx context.Context, impl, addr, ctl string, clusters, endpoints int) error {
	raiseNoFile()
	if os.Getenv("XDSLOAD_MEMPROFILERATE") != "" {
		// Exact heap attribution for profiling runs (costs CPU: not for timing runs).
		runtime.MemProfileRate, _ = strconv.Atoi(os.Getenv("XDSLOAD_MEMPROFILERATE"))
	}
	var opts []grpc.ServerOption
	if impl == "omni" {
		opts = xdsserver.ServerOptions()
	} else {
		// go-control-plane's own example server settings (internal/example).
		opts = []grpc.ServerOption{grpc.MaxConcurrentStreams(1000000)}
	}
	g := grpc.NewServer(opts...)
	var acks atomic.Int64
	var pub publisher
	var lean *xdsserver.Server
	var err error
	switch impl {
	case "omni":
		var srv *xdsserver.Server
		srv, pub, err = serveOmni(&acks, clusters, endpoints)
		if err == nil {
			srv.Register(g)
		}
	case "omni-lean":
		lean, pub, err = serveOmni(&acks, clusters, endpoints)
	case "gcp":
		pub, err = serveGCP(ctx, g, &acks, clusters, endpoints)
	default:
		return fmt.Errorf("unknown -impl %q (omni, omni-lean or gcp)", impl)
	}
	if err != nil {
		return fmt.Errorf("initial snapshot: %w", err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	var mu sync.Mutex // one update at a time
	seq := 0
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		st := stats{CPUNanos: cpuNanos(), Acks: acks.Load(), Goroutines: runtime.NumGoroutine()}
		if r.URL.Query().Get("light") == "" {
			// Each GC shrinks a goroutine stack by at most half: a few rounds
			// reach the steady size of idle streams.
			for range 4 {
				runtime.GC()
			}
			debug.FreeOSMemory()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			st.RSS, st.HeapInuse, st.StackInuse = rss(), int64(ms.HeapInuse), int64(ms.StackInuse)
		}
		_ = json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("POST /update", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		seq++
		res := updateResult{CPUNanos: cpuNanos(), T0: time.Now().UnixNano()}
		if err := pub(seq); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		res.SetNanos = time.Now().UnixNano() - res.T0
		_ = json.NewEncoder(w).Encode(res)
	})
	hs := &http.Server{Addr: ctl, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 2)
	if lean != nil {
		go func() { errc <- lean.Serve(lis) }()
	} else {
		go func() { errc <- g.Serve(lis) }()
	}
	go func() { errc <- hs.ListenAndServe() }()
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	_ = hs.Close()
	if lean != nil {
		lean.Stop()
	} else {
		g.Stop()
	}
	return err
}

func cpuNanos() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// rss reads the resident set size from /proc/self/status (VmRSS, in kB).
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// raiseNoFile lifts the open-file limit to its hard maximum: each client is
// one socket on both sides.
func raiseNoFile() {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
