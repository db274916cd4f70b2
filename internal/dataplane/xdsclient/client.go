// Package xdsclient owns the data plane's xDS client: one ADS stream (delta
// by default, state-of-the-world on request) to a control plane, the
// resources received per type, warming (a listener or cluster update waits
// until every route configuration, load assignment and secret it names has
// arrived, as in Envoy), signature checks, ACK/NACK, reconnection with
// jittered backoff and the fall back to the last-known-good file when the
// control plane is out of reach at start.
//
// ACK policy: an update is ACKed only once a snapshot containing it has
// been applied by the runtime; an update that does not decode or does not
// verify is NACKed at once, and one the runtime rejects is NACKed with the
// runtime's message (which names the resource); the running config stays.
// An update waiting for its dependants (warming) is answered when they
// arrive. Each response is first tried with the server's whole latest view
// (all types), then, if that is warming or rejected, alone on top of what
// runs, as Envoy applies each type on its own: an EDS change applies while
// a broken cluster update is refused. What the runtime refused is kept as
// the server's view rather than dropped, because a control plane that does
// not re-send NACKed versions (MeshKit) would never send an innocent
// update again: when the culprit is fixed, the kept updates apply with it.
// An ACK therefore always tells the control plane what actually serves.
//
// The client does not import the runtime: it hands complete snapshots to
// Options.Apply, which the app wires to runtime.Apply.
package xdsclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/dataplane/lkg"
	"github.com/omnirelay/omnirelay/internal/shared/capability"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// Options configures a Client.
type Options struct {
	// Address is the control plane's gRPC address (host:port), or several
	// separated by commas: replicas tried in turn, moving to the next
	// whenever a stream ends.
	Address string
	// NodeID and Cluster identify the proxy in its xDS Node.
	NodeID, Cluster string
	// Capabilities are advertised in the Node (capability.Set.Apply).
	Capabilities capability.Set
	// SotW selects state-of-the-world ADS; the default is delta ADS.
	SotW bool
	// Verifier, when non-nil, makes signatures mandatory: a resource
	// without a valid signature from a trusted key is NACKed, never applied,
	// and a last-known-good file holding one is rejected.
	Verifier *signing.Verifier
	// LKGDir is where the last applied snapshot is kept ("" disables
	// last-known-good).
	LKGDir string
	// LKGAfter is how long the client waits for a first config from the
	// control plane before it starts from last-known-good (default 2.5s); a
	// refused connection does not wait.
	LKGAfter time.Duration
	// Apply runs a complete snapshot (the app wires it to runtime.Apply).
	// An error rejects the update (NACK). It is called from one goroutine
	// at a time.
	Apply func(snap *resources.Snapshot, version string) error
	// InitialFetchTimeout is how long an update waits for a route
	// configuration or load assignment it references before it applies
	// without it (Envoy's initial_fetch_timeout: the cluster has no
	// endpoints, the route configuration no virtual hosts, until the
	// resource comes). Zero means DefaultInitialFetchTimeout; negative
	// waits forever.
	InitialFetchTimeout time.Duration
	// ApplyLKG runs a snapshot loaded from last-known-good; nil uses Apply.
	ApplyLKG func(snap *resources.Snapshot, version string) error
	Log      *slog.Logger
	// Stats receives connection state and ACK/NACK counts; nil-safe.
	Stats   Stats
	Backoff Backoff
	// TLS, when set, secures every connection (cloned per dial); nil dials
	// plaintext. Each session dials afresh, so a server certificate that
	// changed is verified at the next reconnect, and a GetClientCertificate
	// callback presents the certificate current at each handshake.
	TLS *tls.Config
}

// DefaultInitialFetchTimeout is Envoy's default initial_fetch_timeout.
const DefaultInitialFetchTimeout = 15 * time.Second

// Stats is what the client reports to metrics.
type Stats interface {
	// XDSConnected is called with true when a stream gets its first
	// response and false when it ends.
	XDSConnected(bool)
	// XDSUpdate counts a response: typ is "lds", "rds", "cds", "eds" or
	// "sds", result "ack" or "nack".
	XDSUpdate(typ, result string)
}

// Backoff is the reconnect schedule: full jitter over an exponentially
// growing ceiling, reset once a stream receives a response.
type Backoff struct {
	Initial time.Duration // default 250ms
	Max     time.Duration // default 30s
}

func (b Backoff) delay(attempt int) time.Duration {
	ceil := b.Initial
	for i := 0; i < attempt && ceil < b.Max; i++ {
		ceil *= 2
	}
	ceil = min(ceil, b.Max)
	// Half fixed, half random: never a zero wait, and restarts of many
	// proxies spread out.
	return ceil/2 + rand.N(ceil/2+1)
}

// Status is the client's state for /ready and logs.
type Status struct {
	Connected bool
	// Address is the control plane address of the current (or last) stream.
	Address string
	// Version is the version string of the last applied snapshot.
	Version string
	// LastError is the last stream error or rejected update ("" when
	// none); a later success does not clear it.
	LastError string
	// LKGError says why the last-known-good file was not used ("" when it
	// was, or when there was none to use).
	LKGError string
	// FromLKG is true while the running config came from last-known-good
	// (no control plane config applied yet in this process).
	FromLKG bool
	// Applied is true once any config (xDS or LKG) has been applied.
	Applied bool
}

type verifyFunc func(name string, body *anypb.Any, md *corev3.Metadata) error

// Client is an xDS client. Create it with New and run it with Run.
type Client struct {
	opt    Options
	node   *corev3.Node
	verify verifyFunc
	log    *slog.Logger

	// types is owned by the Run goroutine.
	types map[string]*typeState

	applyMu    sync.Mutex // orders xDS and LKG applies
	xdsApplied bool       // guarded by applyMu
	savedLKG   string     // version last written to LKGDir; guarded by applyMu

	mu     sync.Mutex
	status Status
}

// New returns a client; nothing happens until Run.
func New(o Options) *Client {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Backoff.Initial <= 0 {
		o.Backoff.Initial = 250 * time.Millisecond
	}
	if o.Backoff.Max <= 0 {
		o.Backoff.Max = 30 * time.Second
	}
	if o.LKGAfter <= 0 {
		o.LKGAfter = 2500 * time.Millisecond
	}
	if o.ApplyLKG == nil {
		o.ApplyLKG = o.Apply
	}
	node := &corev3.Node{Id: o.NodeID, Cluster: o.Cluster}
	caps := o.Capabilities
	if caps.Kind == "" {
		caps.Kind = capability.KindOmniRelay
	}
	caps.Apply(node)
	c := &Client{opt: o, node: node, log: o.Log, types: map[string]*typeState{}}
	if v := o.Verifier; v != nil {
		c.verify = func(name string, body *anypb.Any, md *corev3.Metadata) error {
			return signing.VerifyResource(v, name, body, md)
		}
	}
	for _, u := range typeOrder {
		c.types[u] = newTypeState(u)
	}
	return c
}

// Node returns the xDS Node the client sends (do not modify it).
func (c *Client) Node() *corev3.Node { return c.node }

// Status returns a copy of the current status.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

func (c *Client) setStatus(f func(*Status)) {
	c.mu.Lock()
	f(&c.status)
	c.mu.Unlock()
}

// Run keeps an ADS stream to the control plane until ctx ends, reconnecting
// with backoff. It returns nil when ctx ends. Call it once per Client.
func (c *Client) Run(ctx context.Context) error {
	if c.opt.Apply == nil {
		return errors.New("xdsclient: Options.Apply is required")
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	unreachable := make(chan struct{})
	var unreachableOnce sync.Once
	if c.opt.LKGDir != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTimer(c.opt.LKGAfter)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-unreachable:
			}
			if err := c.loadLKG(); err != nil {
				c.log.Error("last-known-good not used", "dir", c.opt.LKGDir, "error", err)
			}
		}()
	}

	// Several addresses are replicas of one control plane (MeshKit on
	// etcd): a stream that ends moves to the next one, so that a dead
	// replica costs one reconnect, not a backoff against it.
	addrs := splitAddresses(c.opt.Address)
	idx, failures := 0, 0
	for {
		addr := addrs[idx]
		got, err := c.session(ctx, addr)
		if ctx.Err() != nil {
			return nil
		}
		if got {
			failures = 0
		} else {
			failures++
		}
		if failures >= len(addrs) {
			// Every replica refused or failed before answering.
			unreachableOnce.Do(func() { close(unreachable) })
		}
		idx = (idx + 1) % len(addrs)
		d := c.opt.Backoff.delay(failures / len(addrs))
		c.log.Warn("xds stream ended; reconnecting", "address", addr, "error", err, "next", addrs[idx], "retry_in", d)
		c.setStatus(func(s *Status) { s.LastError = err.Error() })
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// splitAddresses reads "host:port[,host:port...]".
func splitAddresses(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		out = []string{s} // dial reports the problem
	}
	return out
}

// loadLKG applies the last-known-good file unless the control plane's
// config has been applied already.
func (c *Client) loadLKG() error {
	version, rs, err := lkg.Load(c.opt.LKGDir)
	if errors.Is(err, fs.ErrNotExist) {
		c.log.Info("no last-known-good config yet", "dir", c.opt.LKGDir)
		return nil
	}
	if err != nil {
		c.setStatus(func(s *Status) { s.LKGError = err.Error() })
		return err
	}
	snap, err := snapshotFromWire(rs, c.verify)
	if err != nil {
		err = fmt.Errorf("last-known-good %s: %w", c.opt.LKGDir, err)
		c.setStatus(func(s *Status) { s.LKGError = err.Error() })
		return err
	}
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	if c.xdsApplied {
		return nil
	}
	if err := c.opt.ApplyLKG(snap, version); err != nil {
		err = fmt.Errorf("last-known-good %s: apply: %w", c.opt.LKGDir, err)
		c.setStatus(func(s *Status) { s.LKGError = err.Error() })
		return err
	}
	c.setStatus(func(s *Status) { s.FromLKG, s.Applied, s.Version = true, true, version })
	c.log.Warn("serving last-known-good config; control plane unreachable", "version", version, "dir", c.opt.LKGDir)
	return nil
}

// applyXDS applies an assembled snapshot and, on success, persists it as
// last-known-good.
func (c *Client) applyXDS(a *assembly) error {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	if err := c.opt.Apply(a.snap, a.version); err != nil {
		return err
	}
	c.xdsApplied = true
	c.setStatus(func(s *Status) { s.FromLKG, s.Applied, s.Version = false, true, a.version })
	if c.opt.LKGDir != "" && a.version != c.savedLKG {
		if err := lkg.Save(c.opt.LKGDir, a.version, a.wire); err != nil {
			// The config runs; only the fallback is stale. Say so loudly.
			c.log.Error("could not save last-known-good", "dir", c.opt.LKGDir, "error", err)
		} else {
			c.savedLKG = a.version
		}
	}
	return nil
}

func dial(addr string, tlsCfg *tls.Config) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg.Clone())
	}
	return grpc.NewClient(addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)),
	)
}

// session runs one stream on a fresh connection. got reports whether the
// stream received any response (the control plane answered).
func (c *Client) session(ctx context.Context, addr string) (got bool, err error) {
	conn, err := dial(addr, c.opt.TLS)
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	var tr transport
	if c.opt.SotW {
		st, err := ads.StreamAggregatedResources(ctx)
		if err != nil {
			return false, fmt.Errorf("open ADS stream to %s: %w", addr, err)
		}
		tr = &sotwTransport{s: st, node: c.node}
	} else {
		st, err := ads.DeltaAggregatedResources(ctx)
		if err != nil {
			return false, fmt.Errorf("open delta ADS stream to %s: %w", addr, err)
		}
		tr = &deltaTransport{s: st, node: c.node}
	}
	s := &session{c: c, addr: addr, tr: tr, ctx: ctx, sent: map[string][]string{}, later: make(chan func() error),
		missingSince: map[string]time.Time{}, gaveUpOn: map[string]bool{}}
	defer s.end()
	return s.run()
}
