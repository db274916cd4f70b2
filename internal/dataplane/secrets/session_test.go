package secrets

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/omnirelay/omnirelay/internal/dataplane/secrets/testca"
)

// TestResumedSessionAfterServerRotation: a client resumes the session of a
// server certificate that has since rotated and expired. VerifyConnection
// sees the session's old certificate; without the session cache policy and
// the retry in HandshakeClient that connection fails "expired" although the
// server holds a valid certificate (seen as 503s at SVID rotation).
func TestResumedSessionAfterServerRotation(t *testing.T) {
	ca := testca.New(t, td)
	tdid := spiffeid.RequireTrustDomainFromString(td)
	roots := []*x509.Certificate{ca.Cert}
	apiID := "spiffe://" + td + "/ns/default/sa/api"
	start := time.Now().Truncate(time.Second)
	leaf := func(from time.Time) *tls.Certificate {
		return ca.Issue(t, testca.Leaf{ID: apiID, NotBefore: from, NotAfter: from.Add(10 * time.Second)})
	}
	serverStore, clientStore := NewStore(), NewStore()
	if err := serverStore.SetIdentity(leaf(start.Add(-time.Second)), roots, tdid); err != nil {
		t.Fatal(err)
	}
	if err := clientStore.SetIdentity(ca.Issue(t, testca.Leaf{ID: "spiffe://" + td + "/ns/default/sa/web"}), roots, tdid); err != nil {
		t.Fatal(err)
	}
	// The server checks dates with the real clock (its certificates are
	// issued for it); the client's clock is moved by the test.
	server := ServerConfig(Params{Certs: []*Ref{serverStore.Ref(DefaultCertName)}, Validation: serverStore.Ref(RootCAName), RequireClientCert: true})
	var clock atomic.Int64
	clock.Store(start.UnixNano())
	client := ClientConfig(Params{Certs: []*Ref{clientStore.Ref(DefaultCertName)}, Validation: clientStore.Ref(RootCAName),
		SANs: uriPrefix(apiID), Now: func() time.Time { return time.Unix(0, clock.Load()) }}, "")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := tls.Server(c, server)
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if tc.Handshake() == nil {
					_, _ = tc.Write([]byte("ok"))
					_, _ = tc.Read(make([]byte, 1))
				}
			}()
		}
	}()
	redials := 0
	redial := func(ctx context.Context) (net.Conn, error) {
		redials++
		var d net.Dialer
		return d.DialContext(ctx, "tcp", ln.Addr().String())
	}
	type result struct {
		resumed bool
		serial  string
	}
	dial := func() (result, error) {
		nc, err := redial(context.Background())
		if err != nil {
			return result{}, err
		}
		tc, err := HandshakeClient(context.Background(), nc, client, redial)
		if err != nil {
			return result{}, err
		}
		defer tc.Close()
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		// Reading processes the TLS 1.3 session ticket.
		if _, err := io.ReadFull(tc, make([]byte, 2)); err != nil {
			return result{}, err
		}
		st := tc.ConnectionState()
		return result{st.DidResume, st.PeerCertificates[0].SerialNumber.String()}, nil
	}
	first, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	if r, err := dial(); err != nil || !r.resumed {
		t.Fatalf("second connection: %+v %v", r, err)
	}

	// The server rotates; the client's clock passes the old certificate's
	// end. The cached session still names the old certificate.
	if err := serverStore.SetIdentity(leaf(start), roots, tdid); err != nil {
		t.Fatal(err)
	}
	clock.Store(start.Add(9500 * time.Millisecond).UnixNano())
	redials = 0
	r, err := dial()
	if err != nil {
		t.Fatalf("connection after the server's rotation and the old certificate's expiry: %v", err)
	}
	if r.resumed || r.serial == first.serial || redials != 2 {
		t.Fatalf("want one stale resumption then a full handshake with the new certificate: %+v, %d dials", r, redials)
	}

	// The retry cached no session (it may have been offered a ticket from a
	// stale connection); the next full handshake does.
	if r, err := dial(); err != nil || r.resumed {
		t.Fatalf("first connection after the retry: %+v %v", r, err)
	}
	if r, err := dial(); err != nil || !r.resumed {
		t.Fatalf("resumption of the new session: %+v %v", r, err)
	}

	// Without a redial function the stale session's error surfaces as such.
	if err := serverStore.SetIdentity(leaf(start.Add(20*time.Second)), roots, tdid); err != nil {
		t.Fatal(err)
	}
	clock.Store(start.Add(10500 * time.Millisecond).UnixNano())
	nc, err := redial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := HandshakeClient(context.Background(), nc, client, nil); !errors.Is(err, ErrStaleSession) || ReasonOf(err) != ReasonExpired {
		t.Fatalf("stale session without redial: %v", err)
	}
}
