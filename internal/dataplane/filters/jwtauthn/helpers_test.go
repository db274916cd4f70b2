package jwtauthn

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
)

// testKey is a private signing key with its public JWK.
type testKey struct {
	kid  string
	alg  jwa.SignatureAlgorithm
	priv any
	pub  jwk.Key
}

func newRSAKey(tb testing.TB, kid string) *testKey {
	tb.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	return importKey(tb, kid, jwa.RS256(), priv, &priv.PublicKey)
}

func newECKey(tb testing.TB, kid string) *testKey {
	tb.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return importKey(tb, kid, jwa.ES256(), priv, &priv.PublicKey)
}

func importKey(tb testing.TB, kid string, alg jwa.SignatureAlgorithm, priv, pub any) *testKey {
	tb.Helper()
	k, err := jwk.Import(pub)
	if err != nil {
		tb.Fatal(err)
	}
	if kid != "" {
		_ = k.Set(jwk.KeyIDKey, kid)
	}
	return &testKey{kid: kid, alg: alg, priv: priv, pub: k}
}

func jwks(tb testing.TB, keys ...*testKey) string {
	tb.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		if err := set.AddKey(k.pub); err != nil {
			tb.Fatal(err)
		}
	}
	b, err := json.Marshal(set)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// sign returns a compact JWS of claims signed by k.
func (k *testKey) sign(tb testing.TB, claims map[string]any) string {
	tb.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		tb.Fatal(err)
	}
	return k.signPayload(tb, payload)
}

func (k *testKey) signPayload(tb testing.TB, payload []byte) string {
	tb.Helper()
	hdr := jws.NewHeaders()
	if k.kid != "" {
		_ = hdr.Set(jws.KeyIDKey, k.kid)
	}
	_ = hdr.Set("typ", "JWT")
	out, err := jws.Sign(payload, jws.WithKey(k.alg, k.priv, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		tb.Fatal(err)
	}
	return string(out)
}

// rawToken assembles a token by hand, for algorithms no signer would use.
func rawToken(header, claims map[string]any, sig []byte) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding
	return enc.EncodeToString(h) + "." + enc.EncodeToString(c) + "." + enc.EncodeToString(sig)
}

func publicPEM(tb testing.TB, k *testKey) []byte {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.priv.(*rsa.PrivateKey).PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// jwksServer serves a JWKS document that tests swap or break.
type jwksServer struct {
	*httptest.Server
	mu     sync.Mutex
	doc    string
	status int
	hits   atomic.Int64
}

func newJWKSServer(tb testing.TB, doc string) *jwksServer {
	tb.Helper()
	js := &jwksServer{doc: doc, status: http.StatusOK}
	js.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		js.hits.Add(1)
		js.mu.Lock()
		doc, status := js.doc, js.status
		js.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(doc))
	}))
	if !strings.HasPrefix(js.URL, "http://127.0.0.1:") {
		tb.Fatalf("JWKS server not on loopback: %s", js.URL)
	}
	tb.Cleanup(js.Close)
	return js
}

func (js *jwksServer) set(doc string, status int) {
	js.mu.Lock()
	js.doc, js.status = doc, status
	js.mu.Unlock()
}

// clock is a settable time source.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }
