package translate

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// Mesh mTLS uses Istio's shapes: the proxy's SVID is the SDS secret
// "default" and the trust bundle "ROOTCA", both served by the local
// identity agent through the "sds-grpc" source rather than by the control
// plane (which never holds the proxy's private key), so a proxy does not
// wait on ADS for them: OmniRelay's agent fills its secret store directly,
// and `omnirelay sds` serves them to an Envoy sidecar over SDS.
const (
	SecretDefault = "default"
	SecretRootCA  = "ROOTCA"
	// SDSClusterName is the source the agent's secrets are named with.
	SDSClusterName = "sds-grpc"
)

func agentSDS(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: &corev3.ConfigSource{
		ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
			ApiType:             corev3.ApiConfigSource_GRPC,
			TransportApiVersion: corev3.ApiVersion_V3,
			GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: SDSClusterName}}}},
		}},
	}}
}

func uriSAN(m *matcherv3.StringMatcher) *tlsv3.SubjectAltNameMatcher {
	return &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: m}
}

// meshValidation verifies peers against ROOTCA and the given URI SANs.
func meshValidation(sans []*tlsv3.SubjectAltNameMatcher) *tlsv3.CommonTlsContext_CombinedValidationContext {
	return &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
		DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sans},
		ValidationContextSdsSecretConfig: agentSDS(SecretRootCA),
	}}
}

// listenerSANs accepts the allowed IDs, or any ID of the trust domain.
func listenerSANs(m *config.ListenerMTLS) []*tlsv3.SubjectAltNameMatcher {
	if len(m.AllowedIDs) > 0 {
		out := make([]*tlsv3.SubjectAltNameMatcher, 0, len(m.AllowedIDs))
		for _, id := range m.AllowedIDs {
			out = append(out, uriSAN(exact(id)))
		}
		return out
	}
	return []*tlsv3.SubjectAltNameMatcher{uriSAN(&matcherv3.StringMatcher{
		MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://" + m.EffectiveTrustDomain() + "/"}})}
}

// listenerMTLS rewrites a translated listener's filter chains for l.mtls:
// http and tcp listeners get the proxy's SVID and required client
// certificates (STRICT), or a TLS chain and a plaintext chain told apart by
// tls_inspector (PERMISSIVE); https listeners keep their certificates and
// verify client certificates against the mesh bundle (required when STRICT).
func listenerMTLS(l *config.Listener, out *listenerv3.Listener) error {
	m := l.MTLS
	if m == nil || m.EffectiveMode() == config.MTLSDisable {
		return nil
	}
	strict := m.EffectiveMode() == config.MTLSStrict
	if l.EffectiveProtocol() == config.ProtocolHTTPS {
		for i, fc := range out.GetFilterChains() {
			d := &tlsv3.DownstreamTlsContext{}
			if err := fc.GetTransportSocket().GetTypedConfig().UnmarshalTo(d); err != nil {
				return fmt.Errorf("mtls: filter_chains[%d]: %w", i, err)
			}
			d.CommonTlsContext.ValidationContextType = meshValidation(listenerSANs(m))
			if strict {
				d.RequireClientCertificate = wrapperspb.Bool(true)
			}
			ts, err := transportSocket(d)
			if err != nil {
				return err
			}
			fc.TransportSocket = ts
		}
		return nil
	}
	if len(out.GetFilterChains()) != 1 {
		return fmt.Errorf("mtls: expected one filter chain, got %d", len(out.GetFilterChains()))
	}
	plain := out.FilterChains[0]
	common := &tlsv3.CommonTlsContext{
		TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{agentSDS(SecretDefault)},
		ValidationContextType:          meshValidation(listenerSANs(m)),
	}
	if l.EffectiveProtocol() == config.ProtocolHTTP {
		common.AlpnProtocols = []string{alpnH2, alpnHTTP1}
	}
	ts, err := transportSocket(&tlsv3.DownstreamTlsContext{CommonTlsContext: common, RequireClientCertificate: wrapperspb.Bool(true)})
	if err != nil {
		return err
	}
	mtlsChain := &listenerv3.FilterChain{Name: l.Name + "/mtls", Filters: plain.Filters, TransportSocket: ts}
	if strict {
		out.FilterChains = []*listenerv3.FilterChain{mtlsChain}
		return nil
	}
	mtlsChain.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "tls"}
	plainChain := &listenerv3.FilterChain{Name: l.Name + "/plaintext",
		FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}}
	for _, f := range plain.Filters {
		plainChain.Filters = append(plainChain.Filters, proto.CloneOf(f))
	}
	out.FilterChains = []*listenerv3.FilterChain{mtlsChain, plainChain}
	out.ListenerFilters, err = tlsInspector()
	return err
}

// clusterMTLS is the transport socket of a cluster with mtls: the proxy's
// SVID as client certificate, and the endpoints verified as the expected
// SPIFFE ID (exact URI SAN) against the mesh bundle.
func clusterMTLS(c *config.Cluster) (*corev3.TransportSocket, error) {
	common := &tlsv3.CommonTlsContext{
		TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{agentSDS(SecretDefault)},
		ValidationContextType:          meshValidation([]*tlsv3.SubjectAltNameMatcher{uriSAN(exact(c.MTLS.Identity))}),
	}
	switch c.EffectiveProtocol() {
	case config.UpstreamH2, config.UpstreamH2C:
		common.AlpnProtocols = []string{alpnH2}
	case config.UpstreamHTTP1:
		common.AlpnProtocols = []string{alpnHTTP1}
	default:
		common.AlpnProtocols = []string{alpnH2, alpnHTTP1}
	}
	return transportSocket(&tlsv3.UpstreamTlsContext{CommonTlsContext: common})
}
