package source

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/filters"
	"github.com/omnirelay/omnirelay/internal/dataplane/runtime"
	"github.com/omnirelay/omnirelay/internal/dataplane/stats"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a log sink read while the source writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func config(addr, cluster string) string {
	return `
listeners:
  - name: web
    address: ` + addr + `
    virtual_hosts:
      - { name: all, domains: ["*"], routes: [{ match: { path_prefix: / }, cluster: ` + cluster + ` }] }
clusters:
  - { name: a, endpoints: [127.0.0.1:9001] }
  - { name: b, endpoints: [127.0.0.1:9002] }
`
}

// fileProxy runs the file source at path against a real runtime, as the
// proxy does, until the end of the test.
type fileProxy struct {
	rt    *runtime.Runtime
	st    *stats.Stats
	log   *syncBuffer
	src   *File
	apply Apply
}

func startFile(t *testing.T, path string) (*fileProxy, error) {
	t.Helper()
	src, err := OpenFile(path, 10*time.Millisecond)
	if err != nil {
		return nil, err
	}
	reg, err := filter.NewRegistry(filters.Builtins()...)
	if err != nil {
		t.Fatal(err)
	}
	fp := &fileProxy{st: stats.New(), log: &syncBuffer{}, src: src}
	log := slog.New(slog.NewTextHandler(fp.log, nil))
	fp.rt = runtime.New(runtime.Options{Log: log, Stats: fp.st, Filters: reg, DrainTimeout: time.Second})
	fp.apply = func(u Update) error {
		apply := fp.rt.Apply
		if u.Reread {
			apply = fp.rt.Reapply
		}
		if err := apply(u.Snapshot, u.Source); err != nil && !errors.Is(err, runtime.ErrUnchanged) {
			return err
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
		_ = fp.rt.Shutdown(context.Background())
	})
	if err := src.Start(Env{Apply: fp.apply, Stats: fp.st, XDS: stats.NewXDS(fp.st), Log: log}); err != nil {
		close(done)
		return nil, err
	}
	go func() {
		defer close(done)
		if err := src.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	return fp, nil
}

func routeCluster(rt *runtime.Runtime) string {
	b, _ := rt.Current().Resources.MarshalJSON()
	_, rest, _ := strings.Cut(strings.ReplaceAll(string(b), " ", ""), `"cluster":"`)
	c, _, _ := strings.Cut(rest, `"`)
	return c
}

// The file source applies the file at Start, then each edit; an edit that
// does not parse or does not apply is logged with the file and the reason,
// counted as rejected, and the running version stays; Reload re-applies.
func TestFileSource(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.yaml")
	addr := testutil.Addr(t)
	testutil.WriteFile(t, path, []byte(config(addr, "a")))
	fp, err := startFile(t, path)
	if err != nil {
		t.Fatal(err)
	}
	first := fp.rt.Current()
	if first == nil || first.Source != "file:"+path || routeCluster(fp.rt) != "a" {
		t.Fatalf("after Start: version %+v, want the file's, routing to a", first)
	}

	testutil.WriteFile(t, path, []byte(config(addr, "b")))
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "the edit applied", testutil.Bool(func() bool { return routeCluster(fp.rt) == "b" }))
	edited := fp.rt.Current()

	// Does not parse (unknown cluster): the runtime never sees it.
	testutil.WriteFile(t, path, []byte(config(addr, "nope")))
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "the bad edit logged", testutil.Bool(func() bool { return strings.Contains(fp.log.String(), "nope") }))
	// Parses but does not apply: the port is held by someone else.
	busy := testutil.Addr(t)
	hold, err := net.Listen("tcp", busy)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	testutil.WriteFile(t, path, []byte(strings.Replace(config(addr, "b"), "clusters:", "  - { name: db, address: "+busy+", protocol: tcp, cluster: a }\nclusters:", 1)))
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "the unbindable edit logged", testutil.Bool(func() bool { return strings.Contains(fp.log.String(), busy) }))
	if fp.rt.Current() != edited {
		t.Fatal("a rejected edit replaced the running version")
	}
	log := fp.log.String()
	if !strings.Contains(log, "config rejected; the running version stays in force") || !strings.Contains(log, path) {
		t.Fatalf("the rejections are not logged with the file:\n%s", log)
	}
	if rejected := reloads(t, fp.st, "rejected"); rejected != 2 {
		t.Fatalf("omnirelay_config_reloads_total{result=rejected} = %v, want both bad edits counted", rejected)
	}

	testutil.WriteFile(t, path, []byte(config(addr, "a")))
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "the fixed file applied", testutil.Bool(func() bool { return routeCluster(fp.rt) == "a" }))
	fixed := fp.rt.Current()
	fp.src.Reload()
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "Reload re-applied", testutil.Bool(func() bool { return fp.rt.Current() != fixed }))
	if fp.rt.Current().ID != fixed.ID {
		t.Fatal("Reload of an unchanged file changed the version")
	}
}

// A file that does not parse, or does not apply, fails the start with the
// error that names it.
func TestFileSourceBadStart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.yaml")
	testutil.WriteFile(t, path, []byte(config(testutil.Addr(t), "nope")))
	if _, err := startFile(t, path); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("start on an unknown cluster: err = %v, want the file and the cluster named", err)
	}
	busy := testutil.Addr(t)
	hold, err := net.Listen("tcp", busy)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	testutil.WriteFile(t, path, []byte(config(busy, "a")))
	if _, err := startFile(t, path); err == nil || !strings.Contains(err.Error(), busy) {
		t.Fatalf("start on a port in use: err = %v, want the address named", err)
	}
	if _, err := OpenFile(filepath.Join(dir, "absent.yaml"), 0); err == nil || !strings.Contains(err.Error(), "read config") {
		t.Fatalf("absent file: err = %v, want read config", err)
	}
}

// reloads is omnirelay_config_reloads_total{result=result}.
func reloads(t *testing.T, st *stats.Stats, result string) float64 {
	t.Helper()
	mfs, err := st.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "omnirelay_config_reloads_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// NewXDS refuses options it cannot run with, naming what is wrong, before
// anything starts.
func TestNewXDSRejects(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "junk.pem")
	testutil.WriteFile(t, notPEM, []byte("not a PEM file"))
	tests := []struct {
		name string
		opt  XDSOptions
		want string
	}{
		{"no address", XDSOptions{NodeID: "n"}, "server address and a node id"},
		{"no node id", XDSOptions{Address: "127.0.0.1:1"}, "server address and a node id"},
		{"trust root missing", XDSOptions{Address: "127.0.0.1:1", NodeID: "n", TrustRoot: filepath.Join(dir, "absent.pem")}, "trust root"},
		{"ca file missing", XDSOptions{Address: "127.0.0.1:1", NodeID: "n", CAFile: filepath.Join(dir, "absent.pem")}, "xds ca"},
		{"ca file not PEM", XDSOptions{Address: "127.0.0.1:1", NodeID: "n", CAFile: notPEM}, "xds ca " + notPEM},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewXDS(tc.opt); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	x, err := NewXDS(XDSOptions{Address: "127.0.0.1:1", NodeID: "n"})
	if err != nil {
		t.Fatal(err)
	}
	if x.Signed() || x.TLS() || x.Client() != nil || x.ReadyDetail() != "" {
		t.Fatal("a plain xDS source before Start is signed, TLS, has a client or a ready detail")
	}
}
