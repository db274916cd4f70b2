package meshkit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	"github.com/omnirelay/omnirelay/internal/controlplane/store/etcdtest"
	"github.com/omnirelay/omnirelay/internal/controlplane/versions"
	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// historyDoc is a config whose cluster endpoint and route differ by n.
func historyDoc(n int) []byte {
	return fmt.Appendf(nil, `listeners:
  - name: web
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: shop
        routes:
          - match: { path_prefix: /v%d }
            cluster: shop
clusters:
  - name: shop
    endpoints: [127.0.0.1:%d]
`, n, 9000+n)
}

// historyStores opens each kind of store the history runs on: a real
// bbolt file and a real (embedded) etcd; open returns a new handle on the
// same data each call, as a restarted MeshKit would get.
func historyStores(t *testing.T) map[string]func(t *testing.T) store.Store {
	dir := t.TempDir()
	var etcdOnce sync.Once
	var endpoints []string
	return map[string]func(t *testing.T) store.Store{
		"bbolt": func(t *testing.T) store.Store {
			st, err := store.OpenBolt(filepath.Join(dir, t.Name()[strings.LastIndexByte(t.Name(), '/')+1:]+".db"))
			if err != nil {
				t.Fatal(err)
			}
			return st
		},
		"etcd": func(t *testing.T) store.Store {
			etcdOnce.Do(func() { endpoints = etcdtest.StartEtcd(t) })
			st, err := store.OpenEtcd(endpoints, "/"+strings.ReplaceAll(t.Name(), "/", "_"))
			if err != nil {
				t.Fatal(err)
			}
			return st
		},
	}
}

func TestConfigHistory(t *testing.T) {
	for kind, open := range historyStores(t) {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			st := open(t)
			defer st.Close()
			pub, priv, err := signing.GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			m := New(Options{Store: st, Log: slog.New(slog.DiscardHandler), HistoryKeep: 3, Signer: signing.NewSigner(priv)})
			for i := 1; i <= 4; i++ {
				a, err := m.ApplyVersion(versions.WithAuthor(ctx, fmt.Sprintf("alice-%d", i)), "mesh.yaml", historyDoc(i), versions.OriginApply)
				if err != nil {
					t.Fatal(err)
				}
				if a.Number != int64(i) || a.Version != versions.DigestOf(historyDoc(i)) {
					t.Fatalf("apply %d: got %+v", i, a)
				}
			}
			// The same document again makes no version.
			if a, err := m.ApplyVersion(ctx, "mesh.yaml", historyDoc(4), versions.OriginApply); err != nil || !a.Unchanged || a.Number != 4 {
				t.Fatalf("re-apply: %+v, %v", a, err)
			}
			recs, keep, err := m.History(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if keep != 3 || len(recs) != 3 || recs[0].Number != 4 || recs[2].Number != 2 {
				t.Fatalf("history keeps %d: %+v", keep, recs)
			}
			r := recs[0]
			if r.Author != "alice-4" || r.Origin != versions.OriginApply || r.Parent != 3 || r.YAML != nil || r.At.IsZero() {
				t.Fatalf("record: %+v", r)
			}
			wantSummary := "listener web: virtual_host shop: routes changed; cluster shop: endpoints changed"
			if got := strings.Join(r.Summary, "; "); got != wantSummary {
				t.Fatalf("summary %q, want %q", got, wantSummary)
			}
			full, err := m.Version(ctx, 4)
			if err != nil {
				t.Fatal(err)
			}
			if string(full.YAML) != string(historyDoc(4)) {
				t.Fatalf("version 4 document:\n%s", full.YAML)
			}
			if err := full.Verify(signing.NewVerifier(pub)); err != nil {
				t.Fatalf("signature: %v", err)
			}
			tampered := *full
			tampered.Author = "mallory"
			if err := tampered.Verify(signing.NewVerifier(pub)); err == nil {
				t.Fatal("a tampered record verified")
			}
			if _, err := m.Version(ctx, 1); !errors.Is(err, ErrNotKept) || !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("version 1 after trimming: %v", err)
			}

			d, err := m.Diff(ctx, 2, 4)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"--- v2 mesh.yaml\n+++ v4 mesh.yaml\n", "-          - match: { path_prefix: /v2 }\n+          - match: { path_prefix: /v4 }\n", "-    endpoints: [127.0.0.1:9002]\n+    endpoints: [127.0.0.1:9004]\n"} {
				if !strings.Contains(d.Unified, want) {
					t.Fatalf("diff lacks %q:\n%s", want, d.Unified)
				}
			}
			if d, err := m.Diff(ctx, 0, 0); err != nil || d.From != 3 || d.To != 4 {
				t.Fatalf("default diff: %+v, %v", d, err)
			}

			// Undo: the version before the current one, as a new version.
			a, err := m.Undo(versions.WithAuthor(ctx, "bob"), 0)
			if err != nil {
				t.Fatal(err)
			}
			if a.Number != 5 || a.Version != versions.DigestOf(historyDoc(3)) {
				t.Fatalf("undo: %+v", a)
			}
			if doc, _, _ := m.Get(ctx); string(doc) != string(historyDoc(3)) {
				t.Fatalf("in force after undo:\n%s", doc)
			}
			r5, err := m.Version(ctx, 5)
			if err != nil {
				t.Fatal(err)
			}
			if r5.Origin != versions.OriginUndo || r5.Author != "bob" || r5.Summary[0] != "undo: the document of version 3" {
				t.Fatalf("undo record: %+v", r5)
			}
			if a, err := m.Undo(ctx, 4); err != nil || a.Number != 6 || a.Version != versions.DigestOf(historyDoc(4)) {
				t.Fatalf("undo --to 4: %+v, %v", a, err)
			}
			if _, err := m.Undo(ctx, 1); !errors.Is(err, ErrNotKept) {
				t.Fatalf("undo to a dropped version: %v", err)
			}
			var cerr *config.Error
			if _, err := m.Undo(ctx, 6); !errors.As(err, &cerr) {
				t.Fatalf("undo to the current version: %v", err)
			}

			// A restarted MeshKit on the same store resumes numbering, and
			// writes a history entry lost between the two writes of a commit.
			if err := st.Delete(ctx, versions.Key(6), 0); err != nil {
				t.Fatal(err)
			}
			st.Close()
			st2 := open(t)
			defer st2.Close()
			m2 := New(Options{Store: st2, Log: slog.New(slog.DiscardHandler), HistoryKeep: 3})
			if err := m2.Load(ctx); err != nil {
				t.Fatal(err)
			}
			if m2.Current() != 6 {
				t.Fatalf("current after restart: %d", m2.Current())
			}
			if _, err := m2.Version(ctx, 6); err != nil {
				t.Fatalf("lost entry not repaired: %v", err)
			}
			if a, err := m2.ApplyVersion(ctx, "mesh.yaml", historyDoc(7), versions.OriginApply); err != nil || a.Number != 7 {
				t.Fatalf("apply after restart: %+v, %v", a, err)
			}
		})
	}
}

// TestConfigHistoryConcurrentReplicas applies from two MeshKits sharing one
// etcd at once: every apply gets its own number and history entry (the
// numbering is a compare-and-set on the desired key, not a local counter).
func TestConfigHistoryConcurrentReplicas(t *testing.T) {
	endpoints := etcdtest.StartEtcd(t)
	ctx := context.Background()
	var ms []*MeshKit
	for range 2 {
		st, err := store.OpenEtcd(endpoints, "/meshkit")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		ms = append(ms, New(Options{Store: st, Log: slog.New(slog.DiscardHandler), HistoryKeep: 100}))
	}
	const each = 6
	var wg sync.WaitGroup
	errs := make(chan error, 2*each)
	for i, m := range ms {
		wg.Go(func() {
			for j := range each {
				if _, err := m.ApplyVersion(ctx, "mesh.yaml", historyDoc(100*(i+1)+j), versions.OriginApply); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if !errors.Is(err, store.ErrConflict) {
			t.Fatal(err)
		}
		failed++ // lost commitAttempts races in a row: reported, never half-stored
	}
	recs, _, err := ms[0].History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2*each-failed {
		t.Fatalf("%d versions recorded for %d applies (%d reported a conflict)", len(recs), 2*each-failed, failed)
	}
	for i, r := range recs {
		if want := int64(len(recs) - i); r.Number != want || (r.Number > 1 && r.Parent != r.Number-1) {
			t.Fatalf("history[%d] = %d (parent %d), want %d", i, r.Number, r.Parent, want)
		}
	}
}
