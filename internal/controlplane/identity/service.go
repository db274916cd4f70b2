package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

// DefaultSVIDTTL is the lifetime of an issued SVID.
const DefaultSVIDTTL = time.Hour

// Options configures a Service.
type Options struct {
	CA    *CA
	Store store.Store
	// SVIDTTL is the lifetime of issued SVIDs (default DefaultSVIDTTL),
	// capped by the CA certificate's own expiry.
	SVIDTTL time.Duration
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
	Log *slog.Logger
}

// Service implements Identity (served on the identity TLS port) and
// IdentityAdmin (served on the operator API). Safe for concurrent use.
type Service struct {
	ca  *CA
	st  store.Store
	ttl time.Duration
	now func() time.Time
	log *slog.Logger
	id  spiffeid.ID // MeshKit's own identity on the identity port
	// serving is MeshKit's certificate on the identity port: the same
	// source as the other ports' (no host SANs: the agent checks the
	// SPIFFE ID).
	serving *ServerCert
}

// NewService builds the service over a CA and the store holding tokens and
// node records.
func NewService(opt Options) (*Service, error) {
	if opt.CA == nil || opt.Store == nil {
		return nil, errors.New("identity: a CA and a store are required")
	}
	if opt.SVIDTTL == 0 {
		opt.SVIDTTL = DefaultSVIDTTL
	}
	if opt.SVIDTTL < time.Second {
		return nil, fmt.Errorf("identity: SVID lifetime %v is below 1s", opt.SVIDTTL)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	id, err := spiffeid.FromSegments(opt.CA.TrustDomain(), "meshkit")
	if err != nil {
		return nil, fmt.Errorf("identity: meshkit id: %w", err)
	}
	s := &Service{ca: opt.CA, st: opt.Store, ttl: opt.SVIDTTL, now: opt.Now, log: opt.Log, id: id}
	s.serving = &ServerCert{s: s, ttl: DefaultServerCertTTL}
	return s, nil
}

// ServerID is the SPIFFE ID MeshKit presents on the identity port:
// spiffe://<trust-domain>/meshkit.
func (s *Service) ServerID() spiffeid.ID { return s.id }

// RegisterIdentity registers Identity on the server of the identity port
// (built with ServerTLSConfig).
func (s *Service) RegisterIdentity(g grpc.ServiceRegistrar) {
	meshkitv1.RegisterIdentityServer(g, identityServer{s: s})
}

// RegisterAdmin registers IdentityAdmin on the operator API server.
func (s *Service) RegisterAdmin(g grpc.ServiceRegistrar) {
	meshkitv1.RegisterIdentityAdminServer(g, adminServer{s: s})
}

// ServerTLSConfig is the identity port's TLS: MeshKit's own SVID, and a
// client certificate verified against the trust bundle when one is given
// (a renewal), none required (a first certificate with a join token).
func (s *Service) ServerTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      s.ca.RootPool(),
		GetCertificate: s.serving.GetCertificate,
	}
}

// chainDER is the leaf followed by the CA's chain without its root (peers
// hold the root in their bundle).
func (s *Service) chainDER(leaf *x509.Certificate) [][]byte {
	out := [][]byte{leaf.Raw}
	for _, c := range s.ca.chain[:len(s.ca.chain)-1] {
		out = append(out, c.Raw)
	}
	return out
}

// CreateJoinToken enrols nodeID for the SPIFFE ID and returns a single-use
// token valid for ttl (0 means DefaultTokenTTL).
func (s *Service) CreateJoinToken(ctx context.Context, nodeID, spiffeID string, ttl time.Duration) (string, time.Time, error) {
	if err := validNodeID(nodeID); err != nil {
		return "", time.Time{}, err
	}
	id, err := parseWorkloadID(s.ca.TrustDomain(), spiffeID)
	if err != nil {
		return "", time.Time{}, err
	}
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < time.Second || ttl > MaxTokenTTL {
		return "", time.Time{}, fmt.Errorf("%w: token ttl %v: want 1s to %v", errInvalidInput, ttl, MaxTokenTTL)
	}
	tok, exp, err := enrol(ctx, s.st, nodeID, id, s.now(), ttl)
	if err != nil {
		return "", time.Time{}, err
	}
	s.log.Info("identity: join token created", "node", nodeID, "spiffe_id", id.String(), "expires_at", exp)
	return tok, exp, nil
}

// RevokeNode marks the node revoked (every later Sign for it is refused)
// and drops its unused tokens.
func (s *Service) RevokeNode(ctx context.Context, nodeID string) (int, error) {
	now := s.now()
	if _, err := updateNode(ctx, s.st, nodeID, func(n *Node) error {
		if !n.Revoked {
			n.Revoked, n.RevokedAt = true, now
		}
		return nil
	}); err != nil {
		return 0, err
	}
	dropped, err := dropTokens(ctx, s.st, nodeID)
	s.log.Info("identity: node revoked", "node", nodeID, "tokens_dropped", dropped)
	return dropped, err
}

// Nodes lists the enrolled nodes sorted by node ID.
func (s *Service) Nodes(ctx context.Context) ([]Node, error) { return listNodes(ctx, s.st) }

// sign checks the CSR and the caller's credential (a join token, else the
// verified client certificate) and issues an SVID.
func (s *Service) sign(ctx context.Context, csrDER []byte, token string) (*x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr signature: %v", err)
	}
	if err := checkCSRKey(csr.PublicKey); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	if len(csr.URIs) > 1 || len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) > 0 {
		return nil, status.Error(codes.InvalidArgument, "csr: the only SAN allowed is the SPIFFE ID URI")
	}
	// A CSR without a SAN asks for the credential's SPIFFE ID: a proxy
	// learns its identity from its first certificate.
	var csrID spiffeid.ID
	if len(csr.URIs) == 1 {
		if csrID, err = spiffeid.FromURI(csr.URIs[0]); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "csr: SPIFFE ID: %v", err)
		}
	}

	now := s.now()
	var nodeID, want string
	if token != "" {
		rec, err := consumeToken(ctx, s.st, token, now)
		if err != nil {
			return nil, s.refuse(err, "", csrID)
		}
		nodeID, want = rec.NodeID, rec.SPIFFEID
	} else {
		leaf := verifiedClientCert(ctx)
		if leaf == nil {
			return nil, status.Error(codes.Unauthenticated, "a join token or a client certificate is required")
		}
		id, err := x509svid.IDFromCert(leaf)
		if err != nil || !id.MemberOf(s.ca.TrustDomain()) {
			return nil, status.Error(codes.PermissionDenied, "client certificate is not an SVID of this trust domain")
		}
		nodeID, want = leaf.Subject.CommonName, id.String()
	}
	if csrID.IsZero() {
		if csrID, err = spiffeid.FromString(want); err != nil {
			return nil, s.refuse(err, nodeID, csrID)
		}
	}
	if csrID.String() != want {
		s.log.Warn("identity: CSR for another SPIFFE ID refused", "node", nodeID, "csr_id", csrID.String(), "allowed", want)
		return nil, status.Errorf(codes.PermissionDenied, "csr SPIFFE ID %s is not the one this credential allows", csrID)
	}

	var leaf *x509.Certificate
	_, err = updateNode(ctx, s.st, nodeID, func(n *Node) error {
		if n.Revoked {
			return errRevoked
		}
		if n.SPIFFEID != want {
			return errOtherID
		}
		if leaf == nil {
			c, err := s.ca.issue(csr.PublicKey, csrID, nodeID, now, s.ttl, n.CertExpiresAt)
			if err != nil {
				return err
			}
			leaf = c
		}
		n.LastIssuedAt, n.CertExpiresAt, n.Serial = now, leaf.NotAfter, hex.EncodeToString(leaf.SerialNumber.Bytes())
		return nil
	})
	if err != nil {
		return nil, s.refuse(err, nodeID, csrID)
	}
	by := "certificate"
	if token != "" {
		by = "join_token"
	}
	s.log.Info("identity: SVID issued", "node", nodeID, "spiffe_id", csrID.String(), "expires_at", leaf.NotAfter, "by", by)
	return leaf, nil
}

// refuse maps a records error to a status that names no internals.
func (s *Service) refuse(err error, nodeID string, id spiffeid.ID) error {
	switch {
	case errors.Is(err, errBadToken):
		return status.Error(codes.Unauthenticated, errBadToken.Error())
	case errors.Is(err, errRevoked), errors.Is(err, errUnknownNode), errors.Is(err, errOtherID):
		s.log.Warn("identity: sign refused", "node", nodeID, "spiffe_id", id.String(), "reason", err.Error())
		return status.Error(codes.PermissionDenied, "this node may not obtain certificates")
	}
	s.log.Error("identity: sign failed", "node", nodeID, "error", err)
	return status.Error(codes.Unavailable, "identity store unavailable")
}

// verifiedClientCert is the client certificate the TLS handshake verified
// against the trust bundle, or nil.
func verifiedClientCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return info.State.VerifiedChains[0][0]
}

type identityServer struct {
	meshkitv1.UnimplementedIdentityServer
	s *Service
}

var _ meshkitv1.IdentityServer = identityServer{}

func (x identityServer) Sign(ctx context.Context, req *meshkitv1.SignRequest) (*meshkitv1.SignResponse, error) {
	leaf, err := x.s.sign(ctx, req.GetCsr(), req.GetJoinToken())
	if err != nil {
		return nil, err
	}
	resp := &meshkitv1.SignResponse{
		CertChain: x.s.chainDER(leaf),
		SpiffeId:  leaf.URIs[0].String(),
		ExpiresAt: timestamppb.New(leaf.NotAfter),
	}
	for _, r := range x.s.ca.Roots() {
		resp.TrustBundle = append(resp.TrustBundle, r.Raw)
	}
	return resp, nil
}

type adminServer struct {
	meshkitv1.UnimplementedIdentityAdminServer
	s *Service
}

var _ meshkitv1.IdentityAdminServer = adminServer{}

func (x adminServer) CreateJoinToken(ctx context.Context, req *meshkitv1.CreateJoinTokenRequest) (*meshkitv1.CreateJoinTokenResponse, error) {
	tok, exp, err := x.s.CreateJoinToken(ctx, req.GetNodeId(), req.GetSpiffeId(), req.GetTtl().AsDuration())
	if err != nil {
		return nil, adminStatus(err)
	}
	return &meshkitv1.CreateJoinTokenResponse{Token: tok, ExpiresAt: timestamppb.New(exp), TrustBundlePem: x.s.ca.RootsPEM()}, nil
}

func (x adminServer) RevokeNode(ctx context.Context, req *meshkitv1.RevokeNodeRequest) (*meshkitv1.RevokeNodeResponse, error) {
	n, err := x.s.RevokeNode(ctx, req.GetNodeId())
	if err != nil {
		return nil, adminStatus(err)
	}
	return &meshkitv1.RevokeNodeResponse{TokensDropped: uint32(n)}, nil
}

func (x adminServer) ListNodes(ctx context.Context, _ *meshkitv1.ListNodesRequest) (*meshkitv1.ListNodesResponse, error) {
	nodes, err := x.s.Nodes(ctx)
	if err != nil {
		return nil, adminStatus(err)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].NodeID < nodes[j].NodeID })
	resp := &meshkitv1.ListNodesResponse{}
	for _, n := range nodes {
		resp.Nodes = append(resp.Nodes, &meshkitv1.IdentityNode{
			NodeId:        n.NodeID,
			SpiffeId:      n.SPIFFEID,
			Revoked:       n.Revoked,
			CreatedAt:     ts(n.CreatedAt),
			RevokedAt:     ts(n.RevokedAt),
			LastIssuedAt:  ts(n.LastIssuedAt),
			CertExpiresAt: ts(n.CertExpiresAt),
			Serial:        n.Serial,
		})
	}
	return resp, nil
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// The operator sees the whole reason: it names their own input.
func adminStatus(err error) error {
	switch {
	case errors.Is(err, errInvalidInput):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, errUnknownNode):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, errRevoked), errors.Is(err, errOtherID):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}
