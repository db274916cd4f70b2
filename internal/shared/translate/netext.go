package translate

import (
	"fmt"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// networkExtensions puts a tcp or tls listener's extension filters before
// the tcp_proxy of each of its filter chains, as network filters with the
// same typed config as the extension HTTP filter (the proxy runs them on
// the connection's bytes). Connection RBAC goes in front of them later.
func (t *translator) networkExtensions(l *config.Listener, out *listenerv3.Listener) error {
	p := l.EffectiveProtocol()
	if len(l.Filters) == 0 || (p != config.ProtocolTCP && p != config.ProtocolTLS) {
		return nil
	}
	var fs []*listenerv3.Filter
	for i := range l.Filters {
		x := l.Filters[i].Extension
		if x == nil {
			return fmt.Errorf("filters[%d]: a tcp or tls listener takes extension filters only", i)
		}
		name, m, err := t.extension(x)
		if err != nil {
			return fmt.Errorf("filters[%d]: %w", i, err)
		}
		f, err := networkFilter(name, m)
		if err != nil {
			return err
		}
		fs = append(fs, f)
	}
	for _, fc := range out.GetFilterChains() {
		pre := make([]*listenerv3.Filter, 0, len(fs)+len(fc.Filters))
		for _, f := range fs {
			pre = append(pre, proto.CloneOf(f))
		}
		fc.Filters = append(pre, fc.Filters...)
	}
	return nil
}
