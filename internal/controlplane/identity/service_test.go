package identity

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	webID   = "spiffe://omnirelay.test/ns/shop/sa/web"
	cartID  = "spiffe://omnirelay.test/ns/shop/sa/cart"
	webNode = "web-1"
)

func code(err error) codes.Code { return status.Code(err) }

func TestSignWithJoinToken(t *testing.T) {
	h := startHarness(t, openBolt(t), 0)
	tok := h.token(t, webNode, webID, 0)
	key := newKey(t)
	resp, err := h.client(t, nil).Sign(context.Background(), &meshkitv1.SignRequest{Csr: csrFor(t, key, webID), JoinToken: tok})
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	svid := h.svidFrom(t, resp, key)
	leaf := svid.Certificates[0]
	if svid.ID.String() != webID || resp.GetSpiffeId() != webID {
		t.Errorf("SPIFFE ID = %s / %s, want %s", svid.ID, resp.GetSpiffeId(), webID)
	}
	if len(leaf.URIs) != 1 || len(leaf.DNSNames) != 0 || len(leaf.IPAddresses) != 0 {
		t.Errorf("SANs: URIs %v DNS %v IPs %v, want the SPIFFE ID only", leaf.URIs, leaf.DNSNames, leaf.IPAddresses)
	}
	if leaf.Subject.CommonName != webNode {
		t.Errorf("subject CN = %q, want the node id", leaf.Subject.CommonName)
	}
	if life := leaf.NotAfter.Sub(time.Now()); life < 59*time.Minute || life > time.Hour+time.Second {
		t.Errorf("SVID lifetime %v, want the 1h default", life)
	}
	if len(resp.GetTrustBundle()) != 1 || string(resp.GetTrustBundle()[0]) != string(h.ca.Roots()[0].Raw) {
		t.Errorf("trust bundle is not the CA root")
	}
	nodes, err := h.admin.ListNodes(context.Background(), &meshkitv1.ListNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := nodes.GetNodes(); len(n) != 1 || n[0].GetNodeId() != webNode || n[0].GetSerial() == "" || n[0].GetCertExpiresAt() == nil {
		t.Errorf("ListNodes = %v, want web-1 with its last certificate", n)
	}
}

// A CSR without a SAN gets the token's SPIFFE ID, and renews with the
// certificate's.
func TestSignWithoutSANTakesTheCredentialsID(t *testing.T) {
	h := startHarness(t, openBolt(t), 0)
	key := newKey(t)
	resp, err := h.client(t, nil).Sign(context.Background(),
		&meshkitv1.SignRequest{Csr: csrFor(t, key), JoinToken: h.token(t, webNode, webID, 0)})
	if err != nil {
		t.Fatal(err)
	}
	svid := h.svidFrom(t, resp, key)
	if svid.ID.String() != webID {
		t.Fatalf("SPIFFE ID = %s, want the token's %s", svid.ID, webID)
	}
	key2 := newKey(t)
	resp, err = h.client(t, svid).Sign(context.Background(), &meshkitv1.SignRequest{Csr: csrFor(t, key2)})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.svidFrom(t, resp, key2).ID.String(); got != webID {
		t.Fatalf("renewed SPIFFE ID = %s, want %s", got, webID)
	}
}

func csrWithDNS(t *testing.T) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"web.shop"}}, newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestSignRefusals(t *testing.T) {
	h := startHarness(t, openBolt(t), 0)
	anon := h.client(t, nil)
	ctx := context.Background()

	used := h.token(t, "n-used", webID, 0)
	if _, err := anon.Sign(ctx, &meshkitv1.SignRequest{Csr: csrFor(t, newKey(t), webID), JoinToken: used}); err != nil {
		t.Fatalf("first use: %v", err)
	}
	expired := h.token(t, "n-expired", webID, time.Minute)
	wrongID := h.token(t, "n-wrong", webID, 0)
	revoked := h.token(t, "n-revoked", webID, 0)
	otherTDTok := h.token(t, "n-other-td", webID, 0)
	if _, err := h.admin.RevokeNode(ctx, &meshkitv1.RevokeNodeRequest{NodeId: "n-revoked"}); err != nil {
		t.Fatal(err)
	}
	otherTD := "spiffe://elsewhere.test/ns/shop/sa/web"

	tests := []struct {
		name    string
		advance time.Duration
		req     *meshkitv1.SignRequest
		want    codes.Code
	}{
		{name: "token reused", req: &meshkitv1.SignRequest{Csr: csrFor(t, newKey(t), webID), JoinToken: used}, want: codes.Unauthenticated},
		{name: "unknown token", req: &meshkitv1.SignRequest{Csr: csrFor(t, newKey(t), webID), JoinToken: "not-a-token"}, want: codes.Unauthenticated},
		{name: "no credential", req: &meshkitv1.SignRequest{Csr: csrFor(t, newKey(t), webID)}, want: codes.Unauthenticated},
		{name: "CSR for another SPIFFE ID", req: &meshkitv1.SignRequest{Csr: csrFor(t, newKey(t), cartID), JoinToken: wrongID}, want: codes.PermissionDenied},
		{name: "CSR in another trust domain", req: &meshkitv1.SignRequest{Csr: csrFor(t, newKey(t), otherTD), JoinToken: otherTDTok}, want: codes.PermissionDenied},
		{name: "revoked node, token dropped", req: &meshkitv1.SignRequest{Csr: csrFor(t, newKey(t), webID), JoinToken: revoked}, want: codes.Unauthenticated},
		{name: "CSR with two SANs", req: &meshkitv1.SignRequest{Csr: csrFor(t, newKey(t), webID, cartID), JoinToken: "x"}, want: codes.InvalidArgument},
		{name: "CSR with a DNS SAN", req: &meshkitv1.SignRequest{Csr: csrWithDNS(t), JoinToken: "x"}, want: codes.InvalidArgument},
		{name: "garbage CSR", req: &meshkitv1.SignRequest{Csr: []byte("garbage"), JoinToken: "x"}, want: codes.InvalidArgument},
		// Runs last: it moves the clock.
		{name: "token expired", advance: 2 * time.Minute, req: &meshkitv1.SignRequest{Csr: csrFor(t, newKey(t), webID), JoinToken: expired}, want: codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.clock.Advance(tt.advance)
			_, err := anon.Sign(ctx, tt.req)
			if code(err) != tt.want {
				t.Fatalf("Sign: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestRenewalAndRevocation(t *testing.T) {
	h := startHarness(t, openBolt(t), 0)
	ctx := context.Background()
	key := newKey(t)
	resp, err := h.client(t, nil).Sign(ctx, &meshkitv1.SignRequest{Csr: csrFor(t, key, webID), JoinToken: h.token(t, webNode, webID, 0)})
	if err != nil {
		t.Fatal(err)
	}
	svid := h.svidFrom(t, resp, key)
	mtls := h.client(t, svid)

	key2 := newKey(t)
	resp2, err := mtls.Sign(ctx, &meshkitv1.SignRequest{Csr: csrFor(t, key2, webID)})
	if err != nil {
		t.Fatalf("renewal with the current certificate: %v", err)
	}
	svid2 := h.svidFrom(t, resp2, key2)
	if svid2.Certificates[0].SerialNumber.Cmp(svid.Certificates[0].SerialNumber) == 0 {
		t.Error("renewal returned the same certificate")
	}
	if _, err := mtls.Sign(ctx, &meshkitv1.SignRequest{Csr: csrFor(t, newKey(t), cartID)}); code(err) != codes.PermissionDenied {
		t.Errorf("renewal for another SPIFFE ID: %v, want PermissionDenied", err)
	}

	spare := h.token(t, webNode, webID, 0) // an unused token, dropped by the revocation
	rv, err := h.admin.RevokeNode(ctx, &meshkitv1.RevokeNodeRequest{NodeId: webNode})
	if err != nil {
		t.Fatal(err)
	}
	if rv.GetTokensDropped() != 1 {
		t.Errorf("tokens dropped = %d, want 1", rv.GetTokensDropped())
	}
	if _, err := h.client(t, svid2).Sign(ctx, &meshkitv1.SignRequest{Csr: csrFor(t, newKey(t), webID)}); code(err) != codes.PermissionDenied {
		t.Errorf("renewal after revoke: %v, want PermissionDenied", err)
	}
	if _, err := h.client(t, nil).Sign(ctx, &meshkitv1.SignRequest{Csr: csrFor(t, newKey(t), webID), JoinToken: spare}); code(err) != codes.Unauthenticated {
		t.Errorf("token of a revoked node: %v, want Unauthenticated", err)
	}
	_, err = h.admin.CreateJoinToken(ctx, &meshkitv1.CreateJoinTokenRequest{NodeId: webNode, SpiffeId: webID})
	if code(err) != codes.FailedPrecondition {
		t.Errorf("token for a revoked node: %v, want FailedPrecondition", err)
	}
	nodes, err := h.admin.ListNodes(ctx, &meshkitv1.ListNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := nodes.GetNodes(); len(n) != 1 || !n[0].GetRevoked() || n[0].GetRevokedAt() == nil {
		t.Errorf("ListNodes = %v, want web-1 revoked", n)
	}
	if _, err := h.admin.RevokeNode(ctx, &meshkitv1.RevokeNodeRequest{NodeId: "nobody"}); code(err) != codes.NotFound {
		t.Errorf("revoke unknown node: %v, want NotFound", err)
	}
}

// A certificate from another CA never reaches the service: the TLS
// handshake refuses it.
func TestForeignClientCertificateRefused(t *testing.T) {
	h := startHarness(t, openBolt(t), 0)
	other := startHarness(t, openBolt(t), 0)
	key := newKey(t)
	resp, err := other.client(t, nil).Sign(context.Background(),
		&meshkitv1.SignRequest{Csr: csrFor(t, key, webID), JoinToken: other.token(t, webNode, webID, 0)})
	if err != nil {
		t.Fatal(err)
	}
	foreign := other.svidFrom(t, resp, key)
	// The node exists at h too, so only the certificate decides.
	h.token(t, webNode, webID, 0)
	_, err = h.client(t, foreign).Sign(context.Background(), &meshkitv1.SignRequest{Csr: csrFor(t, newKey(t), webID)})
	if err == nil {
		t.Fatal("renewal with a certificate of another CA succeeded")
	}
}

func TestCreateJoinTokenValidation(t *testing.T) {
	h := startHarness(t, openBolt(t), 0)
	h.token(t, "taken", webID, 0)
	tests := []struct {
		name string
		req  *meshkitv1.CreateJoinTokenRequest
		want codes.Code
		msg  string
	}{
		{name: "ok", req: &meshkitv1.CreateJoinTokenRequest{NodeId: "sidecar~10.0.0.1~web.shop", SpiffeId: webID}, want: codes.OK},
		{name: "same node again", req: &meshkitv1.CreateJoinTokenRequest{NodeId: "taken", SpiffeId: webID}, want: codes.OK},
		{name: "node holds another ID", req: &meshkitv1.CreateJoinTokenRequest{NodeId: "taken", SpiffeId: cartID}, want: codes.FailedPrecondition, msg: "another SPIFFE ID"},
		{name: "empty node", req: &meshkitv1.CreateJoinTokenRequest{SpiffeId: webID}, want: codes.InvalidArgument, msg: "node id"},
		{name: "slash in node", req: &meshkitv1.CreateJoinTokenRequest{NodeId: "a/b", SpiffeId: webID}, want: codes.InvalidArgument, msg: "not allowed"},
		{name: "other trust domain", req: &meshkitv1.CreateJoinTokenRequest{NodeId: "n", SpiffeId: "spiffe://x.test/ns/a/sa/b"}, want: codes.InvalidArgument, msg: "trust domain"},
		{name: "not ns/sa", req: &meshkitv1.CreateJoinTokenRequest{NodeId: "n", SpiffeId: "spiffe://omnirelay.test/meshkit"}, want: codes.InvalidArgument, msg: "/ns/<namespace>/sa/<service>"},
		{name: "not a SPIFFE ID", req: &meshkitv1.CreateJoinTokenRequest{NodeId: "n", SpiffeId: "https://web"}, want: codes.InvalidArgument, msg: "spiffe id"},
		{name: "ttl too long", req: &meshkitv1.CreateJoinTokenRequest{NodeId: "n", SpiffeId: webID, Ttl: durationpb.New(800 * time.Hour)}, want: codes.InvalidArgument, msg: "ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := h.admin.CreateJoinToken(context.Background(), tt.req)
			if code(err) != tt.want {
				t.Fatalf("CreateJoinToken: %v, want %v", err, tt.want)
			}
			if err != nil && !strings.Contains(status.Convert(err).Message(), tt.msg) {
				t.Errorf("message %q does not mention %q", status.Convert(err).Message(), tt.msg)
			}
			if err == nil && (len(resp.GetToken()) < 40 || len(resp.GetTrustBundlePem()) == 0) {
				t.Errorf("response %v: want a long token and the bundle", resp)
			}
		})
	}
}

// MeshKit's own certificate on the identity port is an SVID for
// spiffe://<td>/meshkit that a client verifies with go-spiffe.
func TestServingCertificate(t *testing.T) {
	h := startHarness(t, openBolt(t), 0)
	cfg := tlsconfig.TLSClientConfig(h.ca.Bundle(), tlsconfig.AuthorizeID(h.serverID))
	conn, err := tls.Dial("tcp", h.idAddr, cfg)
	if err != nil {
		t.Fatalf("TLS to the identity port: %v", err)
	}
	id, err := x509svid.IDFromCert(conn.ConnectionState().PeerCertificates[0])
	conn.Close()
	if err != nil || id.String() != "spiffe://omnirelay.test/meshkit" {
		t.Errorf("server id = %v (%v), want spiffe://omnirelay.test/meshkit", id, err)
	}
	// A client expecting another identity refuses the server.
	bad := tlsconfig.TLSClientConfig(h.ca.Bundle(), tlsconfig.AuthorizeID(spiffeid.RequireFromSegments(testTD, "other")))
	if c, err := tls.Dial("tcp", h.idAddr, bad); err == nil {
		c.Close()
		t.Error("client expecting another server id connected")
	}
}
