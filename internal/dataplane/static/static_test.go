package static

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/secrets/testca"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

const v1Config = `version: omnirelay.v1
admin: { address: 127.0.0.1:19901 }
listeners:
  - name: web
    address: 127.0.0.1:18080
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { path_prefix: / }
            cluster: BODY
clusters:
  - { name: a, endpoints: [127.0.0.1:9001] }
  - { name: b, endpoints: [127.0.0.1:9002] }
`

const envoyConfig = `admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 19902 }
static_resources:
  clusters:
    - name: a
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: a
        endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9001 } } } }] }]
`

func v1(cluster string) string { return strings.Replace(v1Config, "BODY", cluster, 1) }

func TestParse(t *testing.T) {
	tests := []struct {
		name      string
		doc       string
		format    string
		admin     string
		listeners int
		clusters  int
		wantErr   []string // substrings of the error; nil: no error
	}{
		{name: "omnirelay.v1", doc: v1("a"), format: "omnirelay.v1", admin: "127.0.0.1:19901", listeners: 1, clusters: 2},
		{name: "envoy", doc: envoyConfig, format: "envoy", admin: "127.0.0.1:19902", clusters: 1},
		{name: "unknown cluster", doc: v1("nope"), wantErr: []string{"edge.yaml", "nope"}},
		{name: "bad yaml", doc: "listeners: [\n", wantErr: []string{"edge.yaml"}},
		{name: "unknown field", doc: v1("a") + "colour: blue\n", wantErr: []string{"edge.yaml", "colour"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Parse("edge.yaml", []byte(tc.doc))
			if tc.wantErr != nil {
				if err == nil {
					t.Fatal("parsed; want an error")
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not name %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.Format != tc.format || l.AdminAddress != tc.admin {
				t.Errorf("format %q admin %q, want %q %q", l.Format, l.AdminAddress, tc.format, tc.admin)
			}
			if len(l.Snapshot.Listeners) != tc.listeners || len(l.Snapshot.Clusters) != tc.clusters {
				t.Errorf("%d listeners %d clusters, want %d %d", len(l.Snapshot.Listeners), len(l.Snapshot.Clusters), tc.listeners, tc.clusters)
			}
			if err := l.Snapshot.Validate(); err != nil {
				t.Errorf("snapshot does not validate: %v", err)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "absent.yaml"))
	if err == nil || !strings.Contains(err.Error(), "read config") || !strings.Contains(err.Error(), "absent.yaml") {
		t.Fatalf("err = %v, want read config naming the file", err)
	}
}

// applied is one call of the watcher's Apply.
type applied struct {
	cluster string // the route's cluster: which content was parsed
	forced  bool
}

// watch runs a watcher on path (polling every 10ms) that reports every
// Apply and every error, and stops it at the end of the test.
func watch(t *testing.T, path string, files []string) (*Watcher, <-chan applied, <-chan error) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	apps, errs := make(chan applied, 16), make(chan error, 16)
	w := NewWatcher(path, func(l *Loaded, forced bool) error {
		apps <- applied{cluster: routeCluster(t, l), forced: forced}
		return nil
	}, func(err error) { errs <- err }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	w.Interval = 10 * time.Millisecond
	w.Files = files
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.Run(ctx, Sum(data)) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return w, apps, errs
}

// routeCluster is the cluster the config's one route goes to, read from
// the snapshot's JSON form.
func routeCluster(t *testing.T, l *Loaded) string {
	b, err := l.Snapshot.MarshalJSON()
	if err != nil {
		t.Error(err)
		return ""
	}
	s := strings.ReplaceAll(string(b), " ", "")
	_, rest, ok := strings.Cut(s, `"cluster":"`)
	if !ok {
		t.Errorf("no route cluster in %s", s)
		return ""
	}
	c, _, _ := strings.Cut(rest, `"`)
	return c
}

func next[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10s", what)
		panic("unreachable")
	}
}

// The watcher applies each new content of the file, re-applies on Trigger
// even when unchanged, reports a content that does not parse (naming the
// file and the problem) without applying it, and applies the next good one.
func TestWatcherReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.yaml")
	testutil.WriteFile(t, path, []byte(v1("a")))
	w, apps, errs := watch(t, path, nil)

	testutil.WriteFile(t, path, []byte(v1("b")))
	if got := next(t, "apply after an edit", apps); got != (applied{cluster: "b"}) {
		t.Fatalf("after an edit: %+v, want cluster b, not forced", got)
	}

	w.Trigger()
	if got := next(t, "apply after Trigger", apps); got != (applied{cluster: "b", forced: true}) {
		t.Fatalf("after Trigger: %+v, want cluster b, forced", got)
	}

	testutil.WriteFile(t, path, []byte(v1("nope")))
	err := next(t, "error for a bad edit", errs)
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("error %q does not name the file and the unknown cluster", err)
	}
	select {
	case a := <-apps:
		t.Fatalf("a bad edit was applied: %+v", a)
	case <-time.After(100 * time.Millisecond):
	}

	testutil.WriteFile(t, path, []byte(v1("a")))
	if got := next(t, "apply after the fix", apps); got != (applied{cluster: "a"}) {
		t.Fatalf("after the fix: %+v, want cluster a", got)
	}
}

// installCert writes a fresh certificate and key for shop.example.com as
// edge.crt and edge.key in dir.
func installCert(t *testing.T, ca *testca.CA, dir string) {
	certPEM, keyPEM := testca.PEM(t, ca.Issue(t, testca.Leaf{DNS: []string{"shop.example.com"}}))
	testutil.WriteFile(t, filepath.Join(dir, "edge.crt"), []byte(string(certPEM)))
	testutil.WriteFile(t, filepath.Join(dir, "edge.key"), []byte(string(keyPEM)))
}

// withTLS is v1(cluster) with an https listener whose certificate and key
// are the files edge.crt and edge.key in dir.
func withTLS(dir, cluster string) string {
	return strings.Replace(v1(cluster), "    virtual_hosts:", "    protocol: https\n    tls: { certificates: [{ cert_file: "+
		dir+"/edge.crt, key_file: "+dir+"/edge.key }] }\n    virtual_hosts:", 1)
}

// A file the running version reads (a certificate) that changes makes the
// watcher re-apply the unchanged config, forced, so that it is read again.
func TestWatcherReappliesOnReferencedFileChange(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.yaml")
	ca := testca.New(t, "omnirelay.test")
	installCert(t, ca, dir)
	testutil.WriteFile(t, path, []byte(withTLS(dir, "a")))
	_, apps, _ := watch(t, path, nil)
	// An edit first: once it is applied the watcher holds the hash of the
	// files this version reads.
	testutil.WriteFile(t, path, []byte(withTLS(dir, "b")))
	if got := next(t, "apply after an edit", apps); got != (applied{cluster: "b"}) {
		t.Fatalf("after an edit: %+v, want cluster b", got)
	}

	installCert(t, ca, dir)
	if got := next(t, "re-apply after the certificate changed", apps); got != (applied{cluster: "b", forced: true}) {
		t.Fatalf("after the certificate changed: %+v, want cluster b, forced", got)
	}
}

// ReferencedFiles lists the certificate and key files of a listener's TLS,
// sorted and once each.
func TestReferencedFiles(t *testing.T) {
	dir := t.TempDir()
	installCert(t, testca.New(t, "omnirelay.test"), dir)
	l, err := Parse(filepath.Join(dir, "edge.yaml"), []byte(withTLS(dir, "a")))
	if err != nil {
		t.Fatal(err)
	}
	got := ReferencedFiles(l.Snapshot)
	want := []string{dir + "/edge.crt", dir + "/edge.key"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("ReferencedFiles = %v, want %v", got, want)
	}
}

// FuzzParse: any bytes either parse into a snapshot that validates or are
// refused with an error naming the file; nothing panics.
func FuzzParse(f *testing.F) {
	f.Add([]byte(v1("a")))
	f.Add([]byte(envoyConfig))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Parse("fuzz.yaml", data)
		if err != nil {
			return
		}
		if err := l.Snapshot.Validate(); err != nil {
			t.Fatalf("parsed into a snapshot that does not validate: %v", err)
		}
	})
}
