// Command xdsload measures how fast one endpoint change reaches N xDS
// clients and what each connected client costs the server.
//
// Driver mode (the default) spawns the server under test as a separate
// process (`xdsload -serve`), so that its memory and CPU are measured alone,
// connects N simulated proxies (each on its own TCP connection, subscribed
// over ADS to CDS and EDS, ACKing every response), then triggers updates
// through the server's control listener. Fan-out latency is the time from
// just before the server's cache update to each client's receipt of the
// changed EDS response; both processes read the same wall clock.
//
// -impl omni measures MeshKit's xdsserver on a grpc.Server (Register),
// -impl omni-lean the same server on its own lean transport (Serve); -impl gcp
// measures go-control-plane's pkg/server/v3 with its snapshot cache, set up
// the same way (one snapshot shared by every node); "omni,omni-lean,gcp" runs
// them in turn.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "xdsload:", err)
		os.Exit(1)
	}
}

type config struct {
	addr, ctl           string
	impls               []string
	clients             int
	delta               bool
	types               []string
	clusters, endpoints int
	updates             int
	spawn               bool
	profiles            string
	omniNode            bool
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("xdsload", flag.ContinueOnError)
	var (
		cfg                     config
		serveMode               bool
		impl, mode, typesFlag   string
		nodeFlag                string
		clustersFlag, endpoints int
	)
	fs.BoolVar(&serveMode, "serve", false, "run the server under test (used by the driver; -impl picks it)")
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:18000", "xDS address")
	fs.StringVar(&cfg.ctl, "ctl", "127.0.0.1:18001", "control address of the server under test")
	fs.StringVar(&impl, "impl", "omni", "server implementation(s), comma-separated: omni (grpc-go transport), omni-lean (lean transport), gcp")
	fs.IntVar(&cfg.clients, "clients", 1000, "simulated proxies, one TCP connection each")
	fs.StringVar(&mode, "mode", "delta", "ADS variant: delta or sotw")
	fs.StringVar(&typesFlag, "types", "cds,eds", "subscribed types (cds, eds)")
	fs.IntVar(&clustersFlag, "clusters", 10, "clusters (each with an EDS assignment) in the snapshot")
	fs.IntVar(&endpoints, "endpoints", 3, "endpoints per cluster")
	fs.IntVar(&cfg.updates, "updates", 5, "endpoint changes to measure")
	fs.BoolVar(&cfg.spawn, "spawn", true, "start the server under test as a child process (false: use -addr/-ctl as they are)")
	fs.StringVar(&nodeFlag, "node", "bare", "the node clients send: bare (id and cluster) or omnirelay (an OmniRelay proxy's, with its capabilities)")
	fs.StringVar(&cfg.profiles, "profiles", "", "directory to save the server's heap and goroutine profiles in, taken with all clients connected")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.clusters, cfg.endpoints = clustersFlag, endpoints
	cfg.impls = strings.Split(impl, ",")
	if serveMode {
		return serve(ctx, impl, cfg.addr, cfg.ctl, clustersFlag, endpoints)
	}
	switch nodeFlag {
	case "bare":
	case "omnirelay":
		cfg.omniNode = true
	default:
		return fmt.Errorf("-node %q: want bare or omnirelay", nodeFlag)
	}
	switch mode {
	case "delta":
		cfg.delta = true
	case "sotw":
	default:
		return fmt.Errorf("-mode %q: want delta or sotw", mode)
	}
	for _, t := range strings.Split(typesFlag, ",") {
		switch t {
		case "cds":
			cfg.types = append(cfg.types, resourcev3.ClusterType)
		case "eds":
			cfg.types = append(cfg.types, resourcev3.EndpointType)
		default:
			return fmt.Errorf("-types: unknown %q (cds, eds)", t)
		}
	}
	if !slices.Contains(cfg.types, resourcev3.EndpointType) {
		return errors.New("-types must include eds: the measured change is an endpoint change")
	}
	raiseNoFile()
	fmt.Fprintf(out, "| server | mode | clients | connect s | p50 ms | p99 ms | max ms | Set ms | push CPU ms | client CPU ms | RSS/client KB | RSS/client after updates KB | heap/client KB | stacks/client KB | goroutines/client |\n")
	fmt.Fprintf(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, im := range cfg.impls {
		if err := drive(ctx, cfg, im, mode, out); err != nil {
			return fmt.Errorf("%s: %w", im, err)
		}
	}
	return nil
}

func drive(ctx context.Context, cfg config, impl, mode string, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.spawn {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, self, "-serve", "-impl", impl, "-addr", cfg.addr, "-ctl", cfg.ctl,
			"-clusters", fmt.Sprint(cfg.clusters), "-endpoints", fmt.Sprint(cfg.endpoints))
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		defer func() {
			cancel()
			_ = cmd.Wait()
		}()
	}
	var base stats
	if err := poll(ctx, 10*time.Second, func() (bool, error) {
		err := getJSON(ctx, "GET", "http://"+cfg.ctl+"/stats", &base)
		return err == nil, nil
	}); err != nil {
		return fmt.Errorf("server did not come up: %w", err)
	}

	names := make([]string, cfg.clusters)
	for i := range names {
		names[i] = fmt.Sprintf("c%d", i)
	}
	var ep epoch
	clients := make([]*client, cfg.clients)
	start := time.Now()
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		runErr  error
	)
	for i := range clients {
		c := &client{id: i, delta: cfg.delta, types: cfg.types, clusters: names, omniNode: cfg.omniNode}
		clients[i] = c
		if err := c.dial(ctx, cfg.addr); err != nil {
			cancel()
			wg.Wait()
			return err
		}
		wg.Go(func() {
			if err := c.run(ctx, &ep); err != nil {
				errOnce.Do(func() { runErr = err })
			}
		})
	}
	defer wg.Wait()
	defer cancel()
	want := int64(len(cfg.types))
	if err := poll(ctx, 5*time.Minute, func() (bool, error) {
		for _, c := range clients {
			if c.got.Load() < want {
				return false, runErr
			}
		}
		return true, runErr
	}); err != nil {
		return fmt.Errorf("initial config: %w", err)
	}
	if err := waitAcks(ctx, cfg.ctl, base.Acks+int64(cfg.clients)*want); err != nil {
		return err
	}
	connect := time.Since(start)
	var loaded stats
	if err := getJSON(ctx, "GET", "http://"+cfg.ctl+"/stats", &loaded); err != nil {
		return err
	}
	if cfg.profiles != "" {
		if err := saveProfiles(ctx, cfg.ctl, cfg.profiles, impl+"-"+mode); err != nil {
			return err
		}
	}

	var lat []time.Duration
	var setNs, cpuNs, clientNs int64
	acks := loaded.Acks
	for k := 1; k <= cfg.updates; k++ {
		ep.Store(int64(k))
		selfCPU := cpuNanos()
		var u updateResult
		if err := getJSON(ctx, "POST", "http://"+cfg.ctl+"/update", &u); err != nil {
			return err
		}
		if err := poll(ctx, time.Minute, func() (bool, error) {
			for _, c := range clients {
				if c.edsEpoch.Load() < int64(k) {
					return false, runErr
				}
			}
			return true, runErr
		}); err != nil {
			return fmt.Errorf("update %d: %w", k, err)
		}
		// Every client ACKs the EDS response; CDS is unchanged and not re-sent
		// by either server.
		clientNs += cpuNanos() - selfCPU
		acks += int64(cfg.clients)
		if err := waitAcks(ctx, cfg.ctl, acks); err != nil {
			return err
		}
		var after stats
		if err := getJSON(ctx, "GET", "http://"+cfg.ctl+"/stats?light=1", &after); err != nil {
			return err
		}
		acks = after.Acks
		cpuNs += after.CPUNanos - u.CPUNanos
		setNs += u.SetNanos
		for _, c := range clients {
			lat = append(lat, time.Duration(c.edsAt.Load()-u.T0))
		}
	}
	// Memory again once the updates have been served: per-stream state must
	// not grow with pushes (buffers kept, responses queued).
	var after stats
	if err := getJSON(ctx, "GET", "http://"+cfg.ctl+"/stats", &after); err != nil {
		return err
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / 1e6
	}
	n := int64(cfg.clients)
	u := int64(cfg.updates)
	fmt.Fprintf(out, "| %s | %s | %d | %.1f | %.0f | %.0f | %.0f | %.1f | %.0f | %.0f | %.1f | %.1f | %.1f | %.1f | %.1f |\n",
		impl, mode, cfg.clients, connect.Seconds(), pct(0.50), pct(0.99), float64(lat[len(lat)-1])/1e6,
		float64(setNs/u)/1e6, float64(cpuNs/u)/1e6, float64(clientNs/u)/1e6,
		float64(loaded.RSS-base.RSS)/float64(n)/1024,
		float64(after.RSS-base.RSS)/float64(n)/1024,
		float64(loaded.HeapInuse-base.HeapInuse)/float64(n)/1024,
		float64(loaded.StackInuse-base.StackInuse)/float64(n)/1024,
		float64(loaded.Goroutines-base.Goroutines)/float64(n))
	return nil
}

// waitAcks waits until the server has counted at least n ACKs.
func waitAcks(ctx context.Context, ctl string, n int64) error {
	return poll(ctx, time.Minute, func() (bool, error) {
		var s stats
		if err := getJSON(ctx, "GET", "http://"+ctl+"/stats?light=1", &s); err != nil {
			return false, err
		}
		return s.Acks >= n, nil
	})
}

// poll calls f until it reports done, fails, or the timeout passes.
func poll(ctx context.Context, timeout time.Duration, f func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, err := f()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func getJSON(ctx context.Context, method, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func saveProfiles(ctx context.Context, ctl, dir, prefix string) error {
	for _, p := range []string{"heap?gc=1", "goroutine?debug=1"} {
		req, err := http.NewRequestWithContext(ctx, "GET", "http://"+ctl+"/debug/pprof/"+p, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		name := prefix + "-" + strings.SplitN(p, "?", 2)[0] + ".pprof"
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
