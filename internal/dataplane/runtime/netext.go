package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/listener"
)

// networkExtensions is the listener.NetworkFilter of a TCP chain's
// extension network filters (omnirelay.extensions.v1.Extension before
// tcp_proxy), built by the process's extension factory: same packages,
// trust roots, load cache, watchdog and policies as the HTTP filter.
type networkExtensions struct {
	fs []*extension.NetworkFilter
}

var _ listener.NetworkFilter = (*networkExtensions)(nil)

// networkBuilder is what the extension factory offers for tcp listeners.
type networkBuilder interface {
	BuildNetwork(cfg *anypb.Any, listener string) (*extension.NetworkFilter, error)
}

// addNetworkExtension builds f into ch's network filter.
func (rt *Runtime) addNetworkExtension(ch *listener.Chain, lname string, f *listenerv3.Filter) error {
	var b networkBuilder
	if rt.opt.Filters != nil {
		if fac, ok := rt.opt.Filters.Lookup(extension.ConfigType); ok {
			b, _ = fac.(networkBuilder)
		}
	}
	if b == nil {
		return fmt.Errorf("network filter %q: this proxy has no extension runtime", f.GetName())
	}
	nf, err := b.BuildNetwork(f.GetTypedConfig(), lname)
	if err != nil {
		return fmt.Errorf("network filter %q: %w", f.GetName(), err)
	}
	ne, _ := ch.Network.(*networkExtensions)
	if ne == nil {
		ne = &networkExtensions{}
		ch.Network = ne
	}
	ne.fs = append(ne.fs, nf)
	return nil
}

func (n *networkExtensions) NewConn(ctx context.Context, c net.Conn, d *filter.Downstream) (listener.ConnFilter, error) {
	var cs connFilters
	for _, f := range n.fs {
		nc, err := f.NewConn(ctx, *d)
		if err != nil {
			cs.Close()
			return nil, err
		}
		if nc != nil { // nil: skipped under fail_open
			cs = append(cs, nc)
		}
	}
	if len(cs) == 0 {
		return nil, nil
	}
	return cs, nil
}

// connFilters runs a connection's extensions in config order on the
// downstream's bytes and in reverse order on the upstream's, as filter
// chains do.
type connFilters []*extension.NetConn

func (cs connFilters) Data(b []byte, fromDownstream, eos bool) ([]byte, error) {
	var err error
	for i := range cs {
		c := cs[i]
		if !fromDownstream {
			c = cs[len(cs)-1-i]
		}
		if b, err = c.Data(b, fromDownstream, eos); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Upstream implements listener.UpstreamObserver.
func (cs connFilters) Upstream(cluster string, addr net.Addr) {
	for _, c := range cs {
		c.Upstream(cluster, addr)
	}
}

func (cs connFilters) Close() {
	for _, c := range cs {
		c.Close()
	}
}

// errNetworkOnHTTP refuses extension network filters on chains that do not
// end in tcp_proxy: HTTP chains take extensions as HTTP filters.
var errNetworkOnHTTP = errors.New("extension network filters are supported before tcp_proxy only (use the extension HTTP filter on http listeners)")
