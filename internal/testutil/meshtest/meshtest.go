// Package meshtest starts MeshKit (the control plane) for a test and shuts
// it down when the test ends. It imports the control plane only; see
// package testutil for the plane rule.
package meshtest

import (
	"testing"

	"github.com/omnirelay/omnirelay/internal/controlplane/serve"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

// Start starts MeshKit from opt after filling what a test rarely chooses:
// the xDS and API ports on 127.0.0.1:0 (read them from XDSAddr/APIAddr), a
// temporary data directory unless opt names one or uses etcd, ReplicaID
// "test", logs through testutil.Logger. It is shut down when the test ends.
func Start(t testing.TB, opt serve.Options) *serve.Process {
	t.Helper()
	if opt.XDSAddress == "" {
		opt.XDSAddress = "127.0.0.1:0"
	}
	if opt.APIAddress == "" {
		opt.APIAddress = "127.0.0.1:0"
	}
	if opt.DataDir == "" && len(opt.Etcd) == 0 {
		opt.DataDir = t.TempDir()
	}
	if opt.ReplicaID == "" {
		opt.ReplicaID = "test"
	}
	if opt.Log == nil {
		opt.Log = testutil.Logger(t)
	}
	p, err := serve.Start(opt)
	if err != nil {
		t.Fatalf("start MeshKit: %v", err)
	}
	testutil.ShutdownAtCleanup(t, p)
	return p
}

// Signed starts MeshKit like Start, signing what it serves with a fresh
// key; the key pair's TrustFile is the trust root for proxies.
func Signed(t testing.TB, opt serve.Options) (*serve.Process, testutil.KeyPair) {
	t.Helper()
	k := testutil.NewKeyPair(t, t.TempDir(), "mesh")
	opt.SigningKey = k.KeyFile
	return Start(t, opt), k
}
