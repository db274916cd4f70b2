// Package etcdtest starts a real single-member etcd server, embedded in the
// test process, for tests of code that runs against etcd (the store's
// conformance suite, several MeshKit replicas sharing state).
package etcdtest

import (
	"net"
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// startTimeout bounds how long a test waits for the member to be ready.
const startTimeout = 30 * time.Second

// StartEtcd starts an embedded etcd on 127.0.0.1 (random free client and
// peer ports, data under t.TempDir()) and returns its client endpoints. The
// server stops when the test ends.
func StartEtcd(t testing.TB) (endpoints []string) {
	t.Helper()
	var lastErr error
	// Free ports are picked by binding and releasing them; another process
	// can take one in between, so a failed start is retried on new ports.
	for range 3 {
		e, err := start(t)
		if err != nil {
			lastErr = err
			continue
		}
		t.Cleanup(e.Close)
		select {
		case <-e.Server.ReadyNotify():
		case err := <-e.Err():
			t.Fatalf("etcdtest: etcd failed: %v", err)
		case <-time.After(startTimeout):
			t.Fatalf("etcdtest: etcd not ready after %v", startTimeout)
		}
		for _, u := range e.Config().AdvertiseClientUrls {
			endpoints = append(endpoints, u.String())
		}
		return endpoints
	}
	t.Fatalf("etcdtest: start etcd: %v", lastErr)
	return nil
}

func start(t testing.TB) (*embed.Etcd, error) {
	client, err := freeURL()
	if err != nil {
		return nil, err
	}
	peer, err := freeURL()
	if err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Name = "etcdtest"
	cfg.Dir = t.TempDir()
	cfg.LogLevel = "error"
	cfg.UnsafeNoFsync = true // throwaway data: durability only slows tests
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	return embed.StartEtcd(cfg)
}

func freeURL() (url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return url.URL{}, err
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return url.URL{}, err
	}
	return url.URL{Scheme: "http", Host: addr}, nil
}
