package identity

import (
	"context"
	"testing"
	"time"

	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

// TestWatchNodeRecords: NodeRecords lists what is enrolled, and a watch from
// its revision reports enrolment, revocation, an undecodable record and a
// deletion, in order, by node id.
func TestWatchNodeRecords(t *testing.T) {
	h := startHarness(t, openBolt(t), time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.token(t, "n0", "spiffe://"+testTD.Name()+"/ns/a/sa/b", time.Hour)
	nodes, rev, err := h.svc.NodeRecords(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].NodeID != "n0" {
		t.Fatalf("NodeRecords: %+v %v; want n0", nodes, err)
	}
	ch := h.svc.WatchNodeRecords(ctx, rev)

	id := "spiffe://" + testTD.Name() + "/ns/a/sa/c"
	h.token(t, "n1", id, time.Hour)
	if _, err := h.admin.RevokeNode(ctx, &meshkitv1.RevokeNodeRequest{NodeId: "n1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.Put(ctx, nodePrefix+"n2", []byte("{not json"), -1); err != nil {
		t.Fatal(err)
	}
	if err := h.store.Delete(ctx, nodePrefix+"n1", -1); err != nil {
		t.Fatal(err)
	}
	var queue []NodeChange
	for _, want := range []struct {
		name    string
		node    string
		deleted bool
		revoked bool
		id      string
	}{
		{name: "enrolled", node: "n1", id: id},
		{name: "revoked", node: "n1", revoked: true, id: id},
		{name: "undecodable", node: "n2"},
		{name: "deleted", node: "n1", deleted: true},
	} {
		for len(queue) == 0 { // a batch may hold several changes
			select {
			case batch, ok := <-ch:
				if !ok {
					t.Fatalf("%s: watch closed", want.name)
				}
				queue = append(queue, batch...)
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: no change within 5s", want.name)
			}
		}
		got := queue[0]
		queue = queue[1:]
		if got.NodeID != want.node || got.Deleted != want.deleted || got.Node.Revoked != want.revoked || got.Node.SPIFFEID != want.id {
			t.Fatalf("%s: got %+v; want node %s deleted %v revoked %v id %q", want.name, got, want.node, want.deleted, want.revoked, want.id)
		}
	}
	cancel()
	for range ch { // closes with ctx
	}
}
