package extstore_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/omnirelay/omnirelay/internal/controlplane/extstore"
	"github.com/omnirelay/omnirelay/internal/controlplane/meshkit"
	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/translate"
)

const storedConfig = `
listeners:
  - name: edge
    address: 127.0.0.1:8080
    filters: [{ extension: { name: stamp, package: "store:stamp@{{version}}" } }]
    virtual_hosts: [{ name: all, routes: [{ cluster: a }] }]
clusters: [{ name: a, endpoints: [127.0.0.1:9] }]
`

// A config served by MeshKit names a pushed package by name and version;
// MeshKit puts the stored bytes inline in xDS, and refuses a config naming
// a package it does not hold.
func TestStoredPackageReference(t *testing.T) {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "meshkit.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pushed := pkg(t, "stamp", "1.0.0", stampRules, true)
	if _, err := extstore.New(st, nil).Push(ctx, &extv1.PushRequest{Package: pushed}); err != nil {
		t.Fatal(err)
	}
	m := meshkit.New(meshkit.Options{Store: st})
	if _, err := m.Apply(ctx, "mesh.yaml", []byte(strings.ReplaceAll(storedConfig, "{{version}}", "9.9.9"))); err == nil ||
		!strings.Contains(err.Error(), "no package stamp@9.9.9") {
		t.Fatalf("apply naming a missing package: err = %v", err)
	}
	doc := []byte(strings.ReplaceAll(storedConfig, "{{version}}", "1.0.0"))
	if _, err := m.Apply(ctx, "mesh.yaml", doc); err != nil {
		t.Fatalf("apply: %v", err)
	}
	c, err := config.Parse("mesh.yaml", doc)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := translate.TranslateWith(c, translate.Options{ADS: true, Packages: extstore.Resolver(st)})
	if err != nil {
		t.Fatal(err)
	}
	var hcm hcmv3.HttpConnectionManager
	if err := snap.Listeners[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	var x extv1.Extension
	if err := hcm.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(&x); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x.GetPackage(), pushed) {
		t.Fatal("the translated extension does not carry the pushed package")
	}
	// Without a store (a proxy's own config file), the reference is refused.
	if _, err := translate.Translate(c); err == nil || !strings.Contains(err.Error(), "no package store here") {
		t.Fatalf("translate without a store: err = %v", err)
	}
}
