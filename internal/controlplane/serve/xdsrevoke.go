package serve

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/omnirelay/omnirelay/internal/controlplane/identity"
)

// relistDelay is the wait before listing node records again after a failed
// listing (store unreachable).
const relistDelay = time.Second

// watchNodeRecords ends the open xDS streams of a node as soon as its record
// stops vouching for the certificate they were authorized with: revoked,
// deleted, or bound to another SPIFFE ID. Authorize checks the record only
// when a stream opens; this closes the gap for streams already open. It
// follows the store, not the API call, so a revocation made through another
// replica (etcd) reaches this replica's streams too. One watch per replica;
// bound keeps each live node's SPIFFE ID, to tell a re-bind from a renewal
// (which rewrites the record too) and to find what changed across a lost
// watch.
func (p *Process) watchNodeRecords(ctx context.Context) {
	srv := p.MeshKit.Server()
	var bound map[string]string
	for ctx.Err() == nil {
		nodes, rev, err := p.Identity.NodeRecords(ctx)
		if err != nil {
			if ctx.Err() == nil {
				p.log.Warn("xds: node records not listed; open streams of revoked nodes are not closed until they are", "error", err)
				t := time.NewTimer(relistDelay)
				select {
				case <-ctx.Done():
				case <-t.C:
				}
				t.Stop()
			}
			continue
		}
		live := make(map[string]string, len(nodes))
		for _, n := range nodes {
			if n.Revoked {
				srv.CloseNode(n.NodeID, revokedErr(n.NodeID))
				continue
			}
			live[n.NodeID] = n.SPIFFEID
		}
		for id, was := range bound { // changes the lost watch did not report
			if now, ok := live[id]; !ok {
				srv.CloseNode(id, deletedErr(id))
			} else if now != was {
				srv.CloseNode(id, reboundErr(id, now))
			}
		}
		bound = live
		for batch := range p.Identity.WatchNodeRecords(ctx, rev) {
			for _, ch := range batch {
				applyNodeChange(srv, bound, ch)
			}
		}
	}
}

// nodeCloser is the part of xdsserver.Server the watch uses.
type nodeCloser interface {
	CloseNode(nodeID string, err error) int
}

func applyNodeChange(srv nodeCloser, bound map[string]string, ch identity.NodeChange) {
	id := ch.NodeID
	switch {
	case ch.Deleted:
		delete(bound, id)
		srv.CloseNode(id, deletedErr(id))
	case ch.Node.Revoked:
		delete(bound, id)
		srv.CloseNode(id, revokedErr(id))
	default:
		if was, ok := bound[id]; ok && was != ch.Node.SPIFFEID {
			srv.CloseNode(id, reboundErr(id, ch.Node.SPIFFEID))
		}
		bound[id] = ch.Node.SPIFFEID
	}
}

// The statuses match the ones Authorize gives the node's reconnect.
func revokedErr(id string) error {
	return status.Errorf(codes.PermissionDenied, "xds: node %q is revoked", id)
}

func deletedErr(id string) error {
	return status.Errorf(codes.PermissionDenied, "xds: node %q is not enrolled any more (its record was deleted)", id)
}

func reboundErr(id, spiffeID string) error {
	return status.Errorf(codes.PermissionDenied, "xds: node %q is now bound to %s, not the SPIFFE ID this stream was authorized with", id, spiffeID)
}
