package testutil

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// Client is an HTTP/1.1 client for polling: a short timeout and no
// keep-alive, so each request opens a fresh connection and sees the
// listener's current config.
var Client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// H2CClient returns an HTTP/2 client over cleartext (prior knowledge).
func H2CClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}}
}

// NewGet builds a GET request; hdr is name, value pairs, and a "host" name
// sets the request's Host.
func NewGet(t testing.TB, url string, hdr ...string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "host") {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return req
}

// Get sends a GET with c (nil: Client) and returns the response, its body
// read and closed. A transport error fails the test.
func Get(t testing.TB, c *http.Client, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	if c == nil {
		c = Client
	}
	resp, err := c.Do(NewGet(t, url, hdr...))
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	return resp, string(b)
}

// Fetch sends a GET with Client and returns the status and body; a failed
// request gives status 0 and the error's text as the body. It never fails
// the test, which makes it the usual probe inside Eventually.
func Fetch(url string) (status int, body string) {
	resp, err := Client.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "reading the body: " + err.Error()
	}
	return resp.StatusCode, string(b)
}
