package store

import (
	"context"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/controlplane/store/etcdtest"
)

// TestEtcdCampaignCancelledWhileCutOff: a replica waiting in a campaign
// whose connection to etcd is cut must still be able to give up (shutdown
// cancels the campaign) and close its store; etcd's own Campaign would wait
// for etcd to come back before returning.
func TestEtcdCampaignCancelledWhileCutOff(t *testing.T) {
	endpoints := etcdtest.StartEtcd(t)
	prefix := "/campaign/" + t.Name() + "/"
	leader, err := OpenEtcd(endpoints, prefix)
	if err != nil {
		t.Fatal(err)
	}
	defer leader.Close()
	lead, err := leader.Campaign(ctxT(t), "e", "a")
	if err != nil {
		t.Fatal(err)
	}
	defer lead.Resign(context.Background())

	relay := etcdtest.NewRelay(t, endpoints[0])
	waiter, err := OpenEtcd(relay.Endpoints(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	returned := make(chan error, 1)
	go func() {
		_, err := waiter.Campaign(ctx, "e", "b")
		returned <- err
	}()
	time.Sleep(500 * time.Millisecond) // b is waiting behind a
	select {
	case err := <-returned:
		t.Fatalf("campaign returned while another replica leads: %v", err)
	default:
	}
	relay.Cut()
	start := time.Now()
	cancel()
	select {
	case err := <-returned:
		if err == nil {
			t.Fatal("a cancelled campaign won")
		}
		t.Logf("campaign after cancel: %v (%v)", err, time.Since(start))
		if d := time.Since(start); d > campaignCancelGrace+2*time.Second {
			t.Fatalf("campaign took %v to return after cancel", d)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("a campaign cut off etcd did not return after its context was cancelled")
	}
	closed := make(chan struct{})
	go func() { _ = waiter.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(15 * time.Second):
		t.Fatal("closing a store cut off etcd hung")
	}
	relay.Heal()
}
