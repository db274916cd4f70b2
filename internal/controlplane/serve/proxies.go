package serve

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/omnirelay/omnirelay/internal/controlplane/meshkit"
	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

// directoryTimeout bounds the store read of a listing (the API's
// ProxyDirectory takes no context).
const directoryTimeout = 5 * time.Second

// proxyList shows MeshKit's proxy directory, every replica's, through the
// API.
type proxyList struct {
	m   *meshkit.MeshKit
	log *slog.Logger
}

func (l proxyList) Proxies() []*meshkitv1.Proxy {
	ctx, cancel := context.WithTimeout(context.Background(), directoryTimeout)
	defer cancel()
	list, err := l.m.Directory(ctx)
	if err != nil {
		// The operator still sees this replica's proxies.
		l.log.Warn("proxy listing shows this replica only", "error", err)
	}
	out := make([]*meshkitv1.Proxy, 0, len(list))
	for _, p := range list {
		pp := &meshkitv1.Proxy{
			NodeId: p.NodeID, Replica: p.Replica, Cluster: p.Cluster, Kind: string(p.Caps.Kind), Build: p.Caps.Build,
			Filters: p.Caps.Filters, Runtimes: p.Caps.Runtimes, Abis: p.Caps.ABIs, Features: p.Caps.Features,
			Connected: true, ConnectedSince: timestamppb.New(p.ConnectedSince), Acked: p.Acked,
		}
		if n := p.LastNack; n != nil {
			pp.LastNack = &meshkitv1.Nack{TypeUrl: n.TypeURL, Version: n.Version, Detail: n.Detail, At: timestamppb.New(n.At)}
		}
		pp.CanaryBucket = p.Bucket
		for _, x := range p.Extensions {
			pp.Extensions = append(pp.Extensions, &meshkitv1.ProxyExtension{Name: x.Name, Package: x.Package, Role: x.Role, Percent: x.Percent})
		}
		for _, w := range p.Withheld {
			pp.Withheld = append(pp.Withheld, &meshkitv1.Withheld{TypeUrl: w.TypeURL, Name: w.Name, Reason: w.Reason})
		}
		out = append(out, pp)
	}
	return out
}
