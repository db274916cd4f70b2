package h2

import (
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestServerWithGoClient(t *testing.T) {
	addr := startServer(t, &Server{}, testHandler)
	tr := h2cTransport()
	defer tr.CloseIdleConnections()
	big := make([]byte, 10<<20)
	_, _ = rand.Read(big)
	tests := []struct {
		name    string
		method  string
		path    string
		body    []byte
		trailer http.Header
		want    []byte
	}{
		{name: "get", method: "GET", path: "/hello", want: []byte("hello world, this is h2\n")},
		{name: "post echo", method: "POST", path: "/echo", body: []byte("ping"), want: []byte("ping")},
		{name: "post 10MB", method: "POST", path: "/echo", body: big, want: big},
		{name: "trailers", method: "POST", path: "/echo", body: []byte("x"), trailer: http.Header{"X-Req-Trailer": {"v1"}}, want: []byte("x")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != nil {
				body = bytes.NewReader(tt.body)
			}
			req, _ := http.NewRequest(tt.method, "http://"+addr+tt.path, body)
			if tt.trailer != nil {
				req.Trailer = tt.trailer
				req.ContentLength = -1
				req.Body = io.NopCloser(bytes.NewReader(tt.body))
			}
			res, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != 200 || !bytes.Equal(got, tt.want) {
				t.Fatalf("status %d, body %d bytes (want %d)", res.StatusCode, len(got), len(tt.want))
			}
			if tt.body != nil && res.Trailer.Get("X-Echo-Done") != "1" {
				t.Fatalf("trailer missing: %v", res.Trailer)
			}
			for k, v := range tt.trailer {
				if got := res.Trailer.Get(k); got != v[0] {
					t.Fatalf("trailer %s = %q, want %q (all %v)", k, got, v[0], res.Trailer)
				}
			}
			if tt.path == "/hello" && !strings.HasPrefix(res.Header.Get("content-type"), "text/plain") {
				t.Fatalf("content-type %q", res.Header.Get("content-type"))
			}
		})
	}
}

func TestCookieCrumbsJoined(t *testing.T) {
	got := make(chan string, 1)
	addr := startServer(t, &Server{}, func(st *Stream) {
		v, _ := st.Request().Header.Get("cookie")
		got <- string(v) + "|" + string(rune('0'+st.Request().Header.Count("cookie")))
		testHandler(st)
	})
	tr := h2cTransport()
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "http://"+addr+"/hello", nil)
	req.Header["Cookie"] = []string{"a=1", "b=2", "c=3"}
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if g := <-got; g != "a=1; b=2; c=3|1" {
		t.Fatalf("cookie %q", g)
	}
}
