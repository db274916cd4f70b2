package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestGateway walks the HTTP/JSON routes in order: each step sees the state
// the earlier ones left.
func TestGateway(t *testing.T) {
	e := start(t)
	steps := []struct {
		name, method, path, body, contentType, accept string
		status                                        int
		code                                          string   // error code for error answers
		contains                                      []string // substrings of the body
		header                                        string   // header that must be non-empty
	}{
		{name: "no config yet", method: "GET", path: "/v1/config", status: 404, code: "NOT_FOUND"},
		{name: "invalid config lists every error", method: "POST", path: "/v1/config?filename=mesh.yaml", body: invalidConfig,
			status: 400, code: "INVALID_ARGUMENT", contains: []string{"mesh.yaml:", `routes[0].cluster: unknown cluster`, "clusters[1].name: duplicate cluster name"}},
		{name: "apply", method: "POST", path: "/v1/config?filename=mesh.yaml", body: validConfig, status: 200, contains: []string{`"version":`}},
		{name: "get config as yaml", method: "GET", path: "/v1/config", status: 200, contains: []string{"name: shop"}, header: VersionHeader},
		{name: "get config as json", method: "GET", path: "/v1/config", accept: "application/json", status: 200, contains: []string{`"yaml":`, `"version":`}},
		{name: "register", method: "POST", path: "/v1/services/shop/endpoints", contentType: "application/json",
			body:   `{"address": "127.0.0.1:9001", "weight": 2, "locality": {"region": "eu"}, "ttl": "10s"}`,
			status: 200, contains: []string{`"id":"127.0.0.1-9001"`, `"health":"HEALTHY"`, `"ttl":"10s"`, `"lease_expires_at":`}},
		{name: "register with a mismatched service", method: "POST", path: "/v1/services/shop/endpoints",
			body: `{"service": "other", "address": "127.0.0.1:9001"}`, status: 400, code: "INVALID_ARGUMENT", contains: []string{`names service \"other\"`}},
		{name: "register with an unknown field", method: "POST", path: "/v1/services/shop/endpoints",
			body: `{"address": "127.0.0.1:9001", "colour": "red"}`, status: 400, code: "INVALID_ARGUMENT", contains: []string{"colour"}},
		{name: "register with bad values", method: "POST", path: "/v1/services/shop/endpoints",
			body: `{"address": "127.0.0.1", "weight": 0, "ttl": "7200s"}`, status: 400, code: "INVALID_ARGUMENT", contains: []string{"address", "ttl"}},
		{name: "register with no body", method: "POST", path: "/v1/services/shop/endpoints", status: 400, code: "INVALID_ARGUMENT"},
		{name: "register yaml is not json", method: "POST", path: "/v1/services/shop/endpoints", contentType: "application/yaml",
			body: `address: x`, status: 400, code: "INVALID_ARGUMENT", contains: []string{"JSON expected"}},
		{name: "register as curl -d labels it", method: "POST", path: "/v1/services/shop/endpoints", contentType: "application/x-www-form-urlencoded",
			body: `{"id": "curl", "address": "127.0.0.1:9009", "ttl": "1s"}`, status: 200, contains: []string{`"id":"curl"`}},
		{name: "deregister curl's", method: "DELETE", path: "/v1/services/shop/endpoints/curl", status: 200},
		{name: "list services", method: "GET", path: "/v1/services", status: 200, contains: []string{`{"services":[{"name":"shop","endpoints":1,"healthy":1}]}`}},
		{name: "heartbeat without body", method: "PUT", path: "/v1/services/shop/endpoints/127.0.0.1-9001/heartbeat", status: 200, contains: []string{`"ttl":"10s"`}},
		{name: "heartbeat marks unhealthy", method: "PUT", path: "/v1/services/shop/endpoints/127.0.0.1-9001/heartbeat",
			body: `{"health": "UNHEALTHY", "ttl": "20s"}`, status: 200, contains: []string{`"health":"UNHEALTHY"`, `"ttl":"20s"`}},
		{name: "list endpoints", method: "GET", path: "/v1/services/shop/endpoints", status: 200,
			contains: []string{`"address":"127.0.0.1:9001"`, `"weight":2`, `"region":"eu"`, `"health":"UNHEALTHY"`}},
		{name: "heartbeat unknown", method: "PUT", path: "/v1/services/shop/endpoints/nope/heartbeat", status: 404, code: "NOT_FOUND"},
		{name: "deregister", method: "DELETE", path: "/v1/services/shop/endpoints/127.0.0.1-9001", status: 200, contains: []string{"{}"}},
		{name: "deregister again", method: "DELETE", path: "/v1/services/shop/endpoints/127.0.0.1-9001", status: 404, code: "NOT_FOUND"},
		{name: "no services left", method: "GET", path: "/v1/services", status: 200, contains: []string{"{}"}}, // protojson omits empty lists
		{name: "proxies", method: "GET", path: "/v1/proxies", status: 200,
			contains: []string{`"node_id":"edge-1"`, `"connected":true`, `"last_nack":{`, `"withheld":[{`, `"reason":"needs wasm"`}},
		{name: "wrong method", method: "DELETE", path: "/v1/proxies", status: 405, code: "METHOD_NOT_ALLOWED", header: "Allow"},
		{name: "unknown route", method: "GET", path: "/v2/nothing", status: 404, code: "NOT_FOUND"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), s.method, e.httpURL+s.path, strings.NewReader(s.body))
			if err != nil {
				t.Fatal(err)
			}
			if s.contentType != "" {
				req.Header.Set("Content-Type", s.contentType)
			}
			if s.accept != "" {
				req.Header.Set("Accept", s.accept)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != s.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, s.status, body)
			}
			if s.code != "" {
				var eb struct{ Code, Message string }
				if err := json.Unmarshal(body, &eb); err != nil || eb.Code != s.code || eb.Message == "" {
					t.Fatalf("error body %s (%v), want code %s with a message", body, err, s.code)
				}
			}
			// protojson varies its whitespace on purpose: match compacted.
			if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
				var buf bytes.Buffer
				if err := json.Compact(&buf, body); err != nil {
					t.Fatalf("invalid JSON %s: %v", body, err)
				}
				body = buf.Bytes()
			}
			for _, c := range s.contains {
				if !strings.Contains(string(body), c) {
					t.Errorf("body lacks %s:\n%s", c, body)
				}
			}
			if s.header != "" && resp.Header.Get(s.header) == "" {
				t.Errorf("no %s header", s.header)
			}
		})
	}
}
