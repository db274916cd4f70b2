package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestParseErrors pins every validation rule's message: position, path and
// reason. $DIR stands for the directory the config (and its cert files) is in.
func TestParseErrors(t *testing.T) {
	dir := t.TempDir()
	writeCerts(t, dir)
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "unknown top-level field",
			yaml: `listenerz: []
`,
			want: []string{
				"$DIR/c.yaml:1:1: listenerz: unknown field \"listenerz\"",
			},
		},
		{
			name: "unknown nested field",
			yaml: `clusters:
  - name: a
    endpoints: [127.0.0.1:1]
    health_check: { http: { path: /h }, intervall: 1s }
`,
			want: []string{
				"$DIR/c.yaml:4:41: clusters[0].health_check.intervall: unknown field \"intervall\"",
			},
		},
		{
			name: "duplicate key",
			yaml: `clusters:
  - name: a
    name: b
`,
			want: []string{
				"$DIR/c.yaml:3:5: duplicate key \"name\" (first at line 2, column 5)",
			},
		},
		{
			name: "wrong type",
			yaml: `listeners:
  - name: [web]
`,
			want: []string{
				"$DIR/c.yaml:2:11: listeners[0].name: expected a string, got a list",
			},
		},
		{
			name: "negative number",
			yaml: `clusters:
  - { name: a, endpoints: [127.0.0.1:1], max_requests_per_connection: -1 }
`,
			want: []string{
				"$DIR/c.yaml:2:71: clusters[0].max_requests_per_connection: number -1 is out of range for a non-negative integer (32 bits)",
			},
		},
		{
			name: "unsupported version",
			yaml: `version: omnirelay.v2
`,
			want: []string{
				"$DIR/c.yaml:1:10: version: unsupported version \"omnirelay.v2\" (want omnirelay.v1)",
			},
		},
		{
			name: "empty config",
			yaml: ``,
			want: []string{
				"$DIR/c.yaml: config is empty",
			},
		},
		{
			name: "top-level list",
			yaml: `- a
`,
			want: []string{
				"$DIR/c.yaml:1:1: expected a mapping at the top of the document, got a list",
			},
		},
		{
			name: "two documents",
			yaml: `admin: {}
---
admin: {}
`,
			want: []string{
				"$DIR/c.yaml:3:6: a config file holds one YAML document; found another",
			},
		},
		{
			name: "syntax error",
			yaml: `listeners: [ { name: a
`,
			want: []string{
				"$DIR/c.yaml:1:14: could not find flow mapping end token '}'",
			},
		},
		{
			name: "listener name missing and duplicate",
			yaml: `listeners:
  - { address: 127.0.0.1:1, protocol: tcp, cluster: a }
  - { name: x, address: 127.0.0.1:2, protocol: tcp, cluster: a }
  - { name: x, address: 127.0.0.1:3, protocol: tcp, cluster: a }
clusters: [{ name: a, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:2:7: listeners[0].name: name is required",
				"$DIR/c.yaml:4:13: listeners[2].name: duplicate listener name \"x\" (also listeners[1])",
			},
		},
		{
			name: "listener address errors",
			yaml: `listeners:
  - { name: a, protocol: tcp, cluster: c }
  - { name: b, address: 127.0.0.1, protocol: tcp, cluster: c }
  - { name: d, address: 127.0.0.1:70000, protocol: tcp, cluster: c }
  - { name: e, address: localhost:80, protocol: tcp, cluster: c }
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:2:7: listeners[0].address: address is required",
				"$DIR/c.yaml:3:25: listeners[1].address: invalid address \"127.0.0.1\": missing port in address (want host:port)",
				"$DIR/c.yaml:4:25: listeners[2].address: invalid address \"127.0.0.1:70000\": port \"70000\" is not a number in 1-65535",
				"$DIR/c.yaml:5:25: listeners[3].address: invalid address \"localhost:80\": host \"localhost\" is not an IP address (listeners bind IP addresses; use 0.0.0.0 or 127.0.0.1)",
			},
		},
		{
			name: "same address twice",
			yaml: `listeners:
  - { name: a, address: 0.0.0.0:80, protocol: tcp, cluster: c }
  - { name: b, address: 127.0.0.1:80, protocol: tcp, cluster: c }
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:3:25: listeners[1].address: address 127.0.0.1:80 is already used by listener \"a\"",
			},
		},
		{
			name: "admin address clash",
			yaml: `admin: { address: 127.0.0.1:80 }
listeners:
  - { name: a, address: 127.0.0.1:80, protocol: tcp, cluster: c }
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:1:19: admin.address: address 127.0.0.1:80 is also used by listener \"a\"",
			},
		},
		{
			name: "unknown protocol",
			yaml: `listeners:
  - { name: a, address: 127.0.0.1:80, protocol: udp }
`,
			want: []string{
				"$DIR/c.yaml:2:49: listeners[0].protocol: unknown protocol \"udp\" (want http, https, tcp or tls)",
			},
		},
		{
			name: "http listener shape",
			yaml: `listeners:
  - { name: a, address: 127.0.0.1:80, cluster: c, sni_routes: [{ sni: [a.com], cluster: c }] }
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:2:7: listeners[0].virtual_hosts: an http listener needs at least one virtual host",
				"$DIR/c.yaml:2:48: listeners[0].cluster: not allowed on an http listener (route to clusters from virtual_hosts)",
				"$DIR/c.yaml:2:63: listeners[0].sni_routes: not allowed on an http listener (sni_routes belong to protocol: tls)",
			},
		},
		{
			name: "tcp listener shape",
			yaml: `listeners:
  - name: a
    address: 127.0.0.1:80
    protocol: tcp
    virtual_hosts: [{ name: v, routes: [{ cluster: c }] }]
    filters: [{ fault: { abort: { status: 503 } } }]
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:2:5: listeners[0].cluster: a tcp listener needs cluster or weighted_clusters",
				"$DIR/c.yaml:5:20: listeners[0].virtual_hosts: not allowed on a tcp listener",
				"$DIR/c.yaml:6:14: listeners[0].filters: not allowed on a tcp listener (HTTP filters need protocol http or https; extension filters are allowed)",
			},
		},
		{
			name: "tcp cluster and weighted both",
			yaml: `listeners:
  - { name: a, address: 127.0.0.1:80, protocol: tcp, cluster: c, weighted_clusters: [{ cluster: c, weight: 1 }] }
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:2:85: listeners[0].weighted_clusters: use cluster or weighted_clusters, not both",
			},
		},
		{
			name: "tls listener shape",
			yaml: `listeners:
  - { name: a, address: 127.0.0.1:443, protocol: tls, tls: { certificates: [] } }
`,
			want: []string{
				"$DIR/c.yaml:2:7: listeners[0].sni_routes: a tls listener needs sni_routes, or a default cluster",
				"$DIR/c.yaml:2:62: listeners[0].tls: not allowed on a tls listener (tls listeners pass TLS through by SNI; use protocol: https to terminate it)",
			},
		},
		{
			name: "sni names",
			yaml: `listeners:
  - name: a
    address: 127.0.0.1:443
    protocol: tls
    sni_routes:
      - { sni: [a.example.com, "a*.example.com"], cluster: c }
      - { sni: [A.example.com], cluster: c }
      - { sni: [], cluster: c }
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:6:32: listeners[0].sni_routes[0].sni[1]: invalid server name \"a*.example.com\" (a host name, optionally starting with *.)",
				"$DIR/c.yaml:7:17: listeners[0].sni_routes[1].sni[0]: server name \"A.example.com\" is already used by listeners[0].sni_routes[0].sni[0]",
				"$DIR/c.yaml:8:16: listeners[0].sni_routes[2].sni: at least one server name is required",
			},
		},
		{
			name: "https without tls",
			yaml: `listeners:
  - { name: a, address: 127.0.0.1:443, protocol: https, virtual_hosts: [{ name: v, routes: [{ cluster: c }] }] }
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:2:7: listeners[0].tls: an https listener needs tls.certificates",
			},
		},
		{
			name: "https certificates",
			yaml: `listeners:
  - name: a
    address: 127.0.0.1:443
    protocol: https
    tls:
      min_version: "1.1"
      certificates:
        - { cert_file: good.crt }
        - { cert_file: missing.crt, key_file: missing.key }
        - { cert_file: good.crt, key_file: other.key }
    virtual_hosts: [{ name: v, routes: [{ cluster: c }] }]
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:6:20: listeners[0].tls.min_version: unsupported TLS version \"1.1\" (want \"1.2\" or \"1.3\")",
				"$DIR/c.yaml:8:13: listeners[0].tls.certificates[0].key_file: key_file is required with cert_file",
				"$DIR/c.yaml:9:13: listeners[0].tls.certificates[1].sni: only one certificate may leave out sni (it is the default)",
				"$DIR/c.yaml:9:24: listeners[0].tls.certificates[1].cert_file: cannot load certificate and key: open $DIR/missing.crt: no such file or directory",
				"$DIR/c.yaml:10:13: listeners[0].tls.certificates[2].sni: only one certificate may leave out sni (it is the default)",
				"$DIR/c.yaml:10:24: listeners[0].tls.certificates[2].cert_file: cannot load certificate and key: tls: private key does not match public key",
			},
		},
		{
			name: "unknown cluster in route",
			yaml: `listeners:
  - name: web
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: shop
        routes:
          - match: { path_prefix: /api/ }
            cluster: shop-v2
          - match: { path_prefix: / }
            cluster: shop-v3
clusters: [{ name: shop-v2, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:10:22: listeners[0].virtual_hosts[0].routes[1].cluster: unknown cluster \"shop-v3\"",
			},
		},
		{
			name: "weighted clusters",
			yaml: `listeners:
  - name: web
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: shop
        routes:
          - weighted_clusters: [{ cluster: c, weight: 0 }, { cluster: d, weight: 1 }, { cluster: c, weight: 1 }]
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:7:55: listeners[0].virtual_hosts[0].routes[0].weighted_clusters[0].weight: weight must be greater than 0",
				"$DIR/c.yaml:7:71: listeners[0].virtual_hosts[0].routes[0].weighted_clusters[1].cluster: unknown cluster \"d\"",
				"$DIR/c.yaml:7:98: listeners[0].virtual_hosts[0].routes[0].weighted_clusters[2].cluster: cluster \"c\" is listed twice (also listeners[0].virtual_hosts[0].routes[0].weighted_clusters[0])",
			},
		},
		{
			name: "durations",
			yaml: `listeners:
  - name: web
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: shop
        routes:
          - { cluster: c, timeout: 5 }
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:7:36: listeners[0].virtual_hosts[0].routes[0].timeout: duration 5 has no unit (write e.g. 5s)",
			},
		},
		{
			name: "duration syntax",
			yaml: `clusters: [{ name: c, endpoints: [127.0.0.1:9], connect_timeout: 5 seconds }]
`,
			want: []string{
				"$DIR/c.yaml:1:66: clusters[0].connect_timeout: invalid duration \"5 seconds\" (use a number with a unit: 250ms, 5s, 1m)",
			},
		},
		{
			name: "duration negative",
			yaml: `clusters: [{ name: c, endpoints: [127.0.0.1:9], connect_timeout: -1s }]
`,
			want: []string{
				"$DIR/c.yaml:1:66: clusters[0].connect_timeout: duration \"-1s\" is negative",
			},
		},
		{
			name: "duration zero where positive required",
			yaml: `clusters: [{ name: c, endpoints: [127.0.0.1:9], connect_timeout: 0s, health_check: { tcp: {}, interval: 0s } }]
`,
			want: []string{
				"$DIR/c.yaml:1:66: clusters[0].connect_timeout: must be greater than 0",
				"$DIR/c.yaml:1:105: clusters[0].health_check.interval: must be greater than 0",
			},
		},
		{
			name: "route actions",
			yaml: `listeners:
  - name: web
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: shop
        routes:
          - { cluster: c, direct_response: { status: 200 } }
          - { match: { path: /x } }
          - { direct_response: { status: 200 }, timeout: 1s, retry: { attempts: 2 } }
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:7:15: listeners[0].virtual_hosts[0].routes[0]: a route needs exactly one of cluster, weighted_clusters, redirect, direct_response (found 2)",
				"$DIR/c.yaml:8:15: listeners[0].virtual_hosts[0].routes[1]: a route needs exactly one of cluster, weighted_clusters, redirect, direct_response (found 0)",
				"$DIR/c.yaml:9:58: listeners[0].virtual_hosts[0].routes[2].timeout: only valid on a route to cluster or weighted_clusters",
				"$DIR/c.yaml:9:71: listeners[0].virtual_hosts[0].routes[2].retry: only valid on a route to cluster or weighted_clusters",
			},
		},
		{
			name: "route match",
			yaml: `listeners:
  - name: web
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: shop
        routes:
          - { match: { path: /a, path_prefix: /b }, cluster: c }
          - { match: { path_regex: "([a-z" }, cluster: c }
          - { match: { path: a }, cluster: c }
          - { match: { path_prefix: api }, cluster: c }
          - { match: { methods: [get] }, cluster: c }
          - { match: { path_regex: "^/x$" }, cluster: c, prefix_rewrite: /y }
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:7:24: listeners[0].virtual_hosts[0].routes[0].match: use only one of path, path_prefix, path_regex",
				"$DIR/c.yaml:8:36: listeners[0].virtual_hosts[0].routes[1].match.path_regex: invalid regex: error parsing regexp: missing closing ]: `[a-z`",
				"$DIR/c.yaml:9:30: listeners[0].virtual_hosts[0].routes[2].match.path: path \"a\" must start with /",
				"$DIR/c.yaml:10:37: listeners[0].virtual_hosts[0].routes[3].match.path_prefix: path_prefix \"api\" must start with /",
				"$DIR/c.yaml:11:34: listeners[0].virtual_hosts[0].routes[4].match.methods[0]: invalid method \"get\" (methods are upper-case tokens such as GET)",
				"$DIR/c.yaml:12:74: listeners[0].virtual_hosts[0].routes[5].prefix_rewrite: needs a path or path_prefix match",
			},
		},
		{
			name: "header matchers",
			yaml: `listeners:
  - name: web
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: shop
        routes:
          - match: { headers: [{ name: x-a, exact: a, prefix: b }, { name: "bad header", present: true }, { exact: v }, { name: x-r, regex: "(" }] }
            cluster: c
          - match: { headers: { "x:y": z } }
            cluster: c
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:7:34: listeners[0].virtual_hosts[0].routes[0].match.headers[0]: a header matcher needs exactly one of exact, prefix, suffix, contains, regex, present: true (found 2)",
				"$DIR/c.yaml:7:76: listeners[0].virtual_hosts[0].routes[0].match.headers[1].name: invalid header name \"bad header\"",
				"$DIR/c.yaml:7:109: listeners[0].virtual_hosts[0].routes[0].match.headers[2].name: header name is required",
				"$DIR/c.yaml:7:141: listeners[0].virtual_hosts[0].routes[0].match.headers[3].regex: invalid regex: error parsing regexp: missing closing ): `(`",
				"$DIR/c.yaml:9:40: listeners[0].virtual_hosts[0].routes[1].match.headers.x:y: invalid header name \"x:y\"",
			},
		},
		{
			name: "domains",
			yaml: `listeners:
  - name: web
    address: 127.0.0.1:8080
    virtual_hosts:
      - { name: a, domains: ["*", "a.com"], routes: [{ cluster: c }] }
      - { name: b, domains: ["A.com", "*.b.*", "c*d.com"], routes: [{ cluster: c }] }
      - { name: c, routes: [{ cluster: c }] }
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:6:30: listeners[0].virtual_hosts[1].domains[0]: domain \"A.com\" is already used by virtual host \"a\"",
				"$DIR/c.yaml:6:39: listeners[0].virtual_hosts[1].domains[1]: invalid domain \"*.b.*\": one wildcard is allowed, at the start or the end",
				"$DIR/c.yaml:6:48: listeners[0].virtual_hosts[1].domains[2]: invalid domain \"c*d.com\": one wildcard is allowed, at the start or the end",
				"$DIR/c.yaml:7:11: listeners[0].virtual_hosts[2]: domain \"*\" is already used by virtual host \"a\"",
			},
		},
		{
			name: "virtual hosts",
			yaml: `listeners:
  - name: web
    address: 127.0.0.1:8080
    virtual_hosts:
      - { name: a, domains: [a.com], routes: [] }
      - { name: a, domains: [b.com], routes: [{ cluster: c }] }
      - { domains: [c.com], routes: [{ cluster: c }] }
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:5:46: listeners[0].virtual_hosts[0].routes: a virtual host needs at least one route",
				"$DIR/c.yaml:6:17: listeners[0].virtual_hosts[1].name: duplicate virtual host name \"a\" (also virtual_hosts[0])",
				"$DIR/c.yaml:7:11: listeners[0].virtual_hosts[2].name: name is required",
			},
		},
		{
			name: "retry",
			yaml: `listeners:
  - name: web
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: v
        routes:
          - cluster: c
            retry: { attempts: 0, on: [5xx, timeout], retriable_status_codes: [600], per_try_timeout: 0s, backoff: { base: 1s, max: 100ms } }
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:8:32: listeners[0].virtual_hosts[0].routes[0].retry.attempts: attempts counts every try, the first included; it must be at least 1",
				"$DIR/c.yaml:8:45: listeners[0].virtual_hosts[0].routes[0].retry.on[1]: unknown retry condition \"timeout\" (want one of 5xx, gateway-error, reset, connect-failure, retriable-4xx, refused-stream, retriable-status-codes, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable)",
				"$DIR/c.yaml:8:80: listeners[0].virtual_hosts[0].routes[0].retry.retriable_status_codes[0]: status 600 is not in 100-599",
				"$DIR/c.yaml:8:103: listeners[0].virtual_hosts[0].routes[0].retry.per_try_timeout: must be greater than 0",
				"$DIR/c.yaml:8:133: listeners[0].virtual_hosts[0].routes[0].retry.backoff.max: max (100ms) is less than base (1s)",
			},
		},
		{
			name: "redirect and direct response",
			yaml: `listeners:
  - name: web
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: v
        routes:
          - { match: { path: /a }, redirect: { code: 304, https: true, scheme: http } }
          - { match: { path: /b }, redirect: {} }
          - { match: { path: /c }, redirect: { path: /x, prefix_rewrite: /y, scheme: ftp } }
          - { match: { path: /d }, direct_response: { status: 99 } }
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:7:54: listeners[0].virtual_hosts[0].routes[0].redirect.code: redirect code 304 is not one of 301, 302, 303, 307, 308",
				"$DIR/c.yaml:7:66: listeners[0].virtual_hosts[0].routes[0].redirect.https: use https or scheme, not both",
				"$DIR/c.yaml:8:46: listeners[0].virtual_hosts[0].routes[1].redirect: a redirect needs at least one of scheme, https, host, path, prefix_rewrite (it would loop)",
				"$DIR/c.yaml:9:74: listeners[0].virtual_hosts[0].routes[2].redirect.prefix_rewrite: use path or prefix_rewrite, not both",
				"$DIR/c.yaml:9:86: listeners[0].virtual_hosts[0].routes[2].redirect.scheme: scheme \"ftp\" is not http or https",
				"$DIR/c.yaml:10:63: listeners[0].virtual_hosts[0].routes[3].direct_response.status: status 99 is not in 200-599",
			},
		},
		{
			name: "route options",
			yaml: `listeners:
  - name: web
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: v
        routes:
          - cluster: c
            hash_policy: [{ header: x-a, source_ip: true }, {}]
            request_headers_add: { host: x, "x:y": z }
            request_headers_remove: [Host]
            local_rate_limit: { max_tokens: 0 }
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:8:29: listeners[0].virtual_hosts[0].routes[0].hash_policy[0]: use header or source_ip, not both",
				"$DIR/c.yaml:8:61: listeners[0].virtual_hosts[0].routes[0].hash_policy[1]: needs header or source_ip: true",
				"$DIR/c.yaml:9:42: listeners[0].virtual_hosts[0].routes[0].request_headers_add.host: the host header cannot be set here (use host_rewrite)",
				"$DIR/c.yaml:9:52: listeners[0].virtual_hosts[0].routes[0].request_headers_add.x:y: invalid header name \"x:y\"",
				"$DIR/c.yaml:10:38: listeners[0].virtual_hosts[0].routes[0].request_headers_remove[0]: the host header cannot be removed",
				"$DIR/c.yaml:11:45: listeners[0].virtual_hosts[0].routes[0].local_rate_limit.max_tokens: max_tokens must be at least 1",
			},
		},
		{
			name: "filters",
			yaml: `listeners:
  - name: web
    address: 127.0.0.1:8080
    filters:
      - { fault: { abort: { status: 503 } }, cors: { allow_origins: ["*"] } }
      - {}
      - fault: {}
      - fault: { delay: { percent: 101 }, abort: { status: 100 } }
      - local_rate_limit: { max_tokens: 10, tokens_per_fill: 20, fill_interval: 10ms, status: 499 }
      - cors: { allow_origins: ["*"], allow_credentials: true, allow_methods: [get], allow_headers: ["a b"] }
      - headers: { request_add: { "bad name": v }, response_remove: [""] }
    virtual_hosts: [{ name: v, routes: [{ cluster: c }] }]
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:5:11: listeners[0].filters[0]: a filter entry names exactly one filter (headers, local_rate_limit, fault or cors), found 2",
				"$DIR/c.yaml:6:9: listeners[0].filters[1]: a filter entry names exactly one filter (headers, local_rate_limit, fault or cors), found 0",
				"$DIR/c.yaml:7:16: listeners[0].filters[2].fault: a fault filter needs delay or abort",
				"$DIR/c.yaml:8:9: listeners[0].filters[3]: filter fault is listed twice (also listeners[0].filters[2])",
				"$DIR/c.yaml:8:27: listeners[0].filters[3].fault.delay.fixed: fixed is required",
				"$DIR/c.yaml:8:36: listeners[0].filters[3].fault.delay.percent: percent 101 is more than 100",
				"$DIR/c.yaml:8:60: listeners[0].filters[3].fault.abort.status: status 100 is not in 200-599",
				"$DIR/c.yaml:9:62: listeners[0].filters[4].local_rate_limit.tokens_per_fill: tokens_per_fill (20) is more than max_tokens (10)",
				"$DIR/c.yaml:9:81: listeners[0].filters[4].local_rate_limit.fill_interval: fill_interval must be at least 50ms",
				"$DIR/c.yaml:9:95: listeners[0].filters[4].local_rate_limit.status: status 499 is not a standard HTTP error status (4xx or 5xx)",
				"$DIR/c.yaml:10:33: listeners[0].filters[5].cors.allow_origins[0]: \"*\" cannot be combined with allow_credentials (browsers reject it)",
				"$DIR/c.yaml:10:80: listeners[0].filters[5].cors.allow_methods[0]: invalid method \"get\"",
				"$DIR/c.yaml:10:102: listeners[0].filters[5].cors.allow_headers[0]: invalid header name \"a b\"",
				"$DIR/c.yaml:11:47: listeners[0].filters[6].headers.request_add[\"bad name\"]: invalid header name \"bad name\"",
				"$DIR/c.yaml:11:70: listeners[0].filters[6].headers.response_remove[0]: invalid header name \"\"",
			},
		},
		{
			name: "unknown filter",
			yaml: `listeners:
  - name: web
    address: 127.0.0.1:8080
    filters:
      - oauth2: {}
    virtual_hosts: [{ name: v, routes: [{ cluster: c }] }]
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:5:9: listeners[0].filters[0].oauth2: unknown filter \"oauth2\" (want headers, local_rate_limit, fault or cors)",
			},
		},
		{
			name: "listener limits",
			yaml: `listeners:
  - name: web
    address: 127.0.0.1:8080
    max_request_headers_kb: 9000
    access_log: { path: "" }
    virtual_hosts: [{ name: v, routes: [{ cluster: c }] }]
clusters: [{ name: c, endpoints: [127.0.0.1:9] }]
`,
			want: []string{
				"$DIR/c.yaml:4:29: listeners[0].max_request_headers_kb: must be at most 8192",
				"$DIR/c.yaml:5:25: listeners[0].access_log.path: path is required (stdout, stderr or a file path)",
			},
		},
		{
			name: "cluster names",
			yaml: `clusters:
  - { endpoints: [127.0.0.1:9] }
  - { name: a, endpoints: [127.0.0.1:9] }
  - { name: a, endpoints: [127.0.0.1:9] }
`,
			want: []string{
				"$DIR/c.yaml:2:7: clusters[0].name: name is required",
				"$DIR/c.yaml:4:13: clusters[2].name: duplicate cluster name \"a\" (also clusters[1])",
			},
		},
		{
			name: "cluster endpoints",
			yaml: `clusters:
  - { name: a }
  - { name: b, endpoints: [127.0.0.1, "bad_host!:80", ":80", 127.0.0.1:9, 127.0.0.1:9, { address: 127.0.0.1:10, priority: 200 }] }
  - { name: c, eds: true, endpoints: [backend.local:80] }
`,
			want: []string{
				"$DIR/c.yaml:2:7: clusters[0].endpoints: a cluster needs at least one endpoint (or eds: true, or a service)",
				"$DIR/c.yaml:3:28: clusters[1].endpoints[0]: invalid address \"127.0.0.1\": missing port in address (want host:port)",
				"$DIR/c.yaml:3:39: clusters[1].endpoints[1]: invalid address \"bad_host!:80\": host \"bad_host!\" is neither an IP address nor a DNS name",
				"$DIR/c.yaml:3:55: clusters[1].endpoints[2]: invalid address \":80\": host is empty (want host:port)",
				"$DIR/c.yaml:3:75: clusters[1].endpoints[4]: endpoint 127.0.0.1:9 is listed twice (also endpoints[3])",
				"$DIR/c.yaml:3:123: clusters[1].endpoints[5].priority: priority 200 is more than 127",
				"$DIR/c.yaml:4:39: clusters[2].endpoints[0]: eds endpoints must be IP addresses, not \"backend.local:80\"",
			},
		},
		{
			name: "cluster service and endpoint health",
			yaml: `clusters:
  - { name: a, service: "-bad" }
  - { name: b, service: "has space" }
  - { name: c, service: web, endpoints: [backend.local:80] }
  - { name: d, endpoints: [{ address: 127.0.0.1:1, health: sick }, { address: 127.0.0.1:2, health: draining }] }
  - { name: e, service: web.prod_v2 }
`,
			want: []string{
				"$DIR/c.yaml:2:25: clusters[0].service: invalid service name \"-bad\": must start and end with a letter or digit",
				"$DIR/c.yaml:3:25: clusters[1].service: invalid service name \"has space\": character ' ' at offset 3 is not a letter, digit, '.', '-' or '_'",
				"$DIR/c.yaml:4:42: clusters[2].endpoints[0]: eds endpoints must be IP addresses, not \"backend.local:80\"",
				"$DIR/c.yaml:5:60: clusters[3].endpoints[0].health: unknown health \"sick\" (want healthy, unhealthy or draining)",
			},
		},
		{
			name: "endpoint unknown field",
			yaml: `clusters:
  - { name: d, endpoints: [{ adress: 127.0.0.1:1 }] }
`,
			want: []string{
				"$DIR/c.yaml:2:30: clusters[0].endpoints[0].adress: unknown field \"adress\"",
			},
		},
		{
			name: "endpoint wrong shape",
			yaml: `clusters:
  - { name: d, endpoints: [[127.0.0.1:1]] }
`,
			want: []string{
				"$DIR/c.yaml:2:28: clusters[0].endpoints[0]: expected an endpoint (\"host:port\" or a mapping with address), got a list",
			},
		},
		{
			name: "cluster policies",
			yaml: `clusters:
  - { name: a, lb: fastest, protocol: h3, endpoints: [127.0.0.1:9] }
  - { name: b, protocol: h2c, tls: {}, endpoints: [127.0.0.1:9] }
  - { name: c, ring_hash: { minimum_ring_size: 1024 }, maglev: { table_size: 65536 }, endpoints: [127.0.0.1:9] }
  - { name: d, lb: maglev, maglev: { table_size: 65536 }, endpoints: [127.0.0.1:9] }
`,
			want: []string{
				"$DIR/c.yaml:2:20: clusters[0].lb: unknown lb policy \"fastest\" (want round_robin, least_request, random, ring_hash or maglev)",
				"$DIR/c.yaml:2:39: clusters[0].protocol: unknown protocol \"h3\" (want auto, http1, h2c or h2)",
				"$DIR/c.yaml:3:36: clusters[1].tls: h2c is cleartext HTTP/2; use protocol: h2 for HTTP/2 over TLS",
				"$DIR/c.yaml:4:29: clusters[2].ring_hash: only valid with lb: ring_hash",
				"$DIR/c.yaml:4:66: clusters[2].maglev: only valid with lb: maglev",
				"$DIR/c.yaml:4:78: clusters[2].maglev.table_size: table_size 65536 must be a prime number up to 5000011",
				"$DIR/c.yaml:5:50: clusters[3].maglev.table_size: table_size 65536 must be a prime number up to 5000011",
			},
		},
		{
			name: "health checks",
			yaml: `clusters:
  - name: a
    endpoints: [127.0.0.1:9]
    health_check: { tcp: , unhealthy_threshold: 0 }
  - name: b
    endpoints: [127.0.0.1:9]
    health_check: { http: { path: healthz, expected_statuses: [700] }, grpc: {} }
  - name: c
    endpoints: [127.0.0.1:9]
    health_check: { http: {} }
`,
			want: []string{
				"$DIR/c.yaml:4:21: clusters[0].health_check: a health check needs exactly one of http, tcp, grpc (found 0; write tcp: {} for a plain connect check)",
				"$DIR/c.yaml:4:49: clusters[0].health_check.unhealthy_threshold: must be at least 1",
				"$DIR/c.yaml:7:21: clusters[1].health_check: a health check needs exactly one of http, tcp, grpc (found 2; write tcp: {} for a plain connect check)",
				"$DIR/c.yaml:7:35: clusters[1].health_check.http.path: path \"healthz\" must start with /",
				"$DIR/c.yaml:7:64: clusters[1].health_check.http.expected_statuses[0]: status 700 is not in 100-599",
				"$DIR/c.yaml:10:27: clusters[2].health_check.http.path: path is required",
			},
		},
		{
			name: "breakers and outliers",
			yaml: `clusters:
  - name: a
    endpoints: [127.0.0.1:9]
    circuit_breaker: { max_connections: 0 }
    outlier_detection: { consecutive_5xx: 0, max_ejection_percent: 150, base_ejection_time: 0s }
    retry_budget: { percent: 0 }
`,
			want: []string{
				"$DIR/c.yaml:4:41: clusters[0].circuit_breaker.max_connections: must be at least 1",
				"$DIR/c.yaml:5:43: clusters[0].outlier_detection.consecutive_5xx: must be at least 1",
				"$DIR/c.yaml:5:68: clusters[0].outlier_detection.max_ejection_percent: percent 150 is more than 100",
				"$DIR/c.yaml:5:93: clusters[0].outlier_detection.base_ejection_time: must be greater than 0",
				"$DIR/c.yaml:6:30: clusters[0].retry_budget.percent: percent 0 is not in (0, 100]",
			},
		},
		{
			name: "upstream tls",
			yaml: `clusters:
  - { name: a, endpoints: [127.0.0.1:9], tls: { cert_file: good.crt } }
  - { name: b, endpoints: [127.0.0.1:9], tls: { key_file: good.key } }
  - { name: c, endpoints: [127.0.0.1:9], tls: { ca_file: missing.pem, insecure_skip_verify: true } }
  - { name: d, endpoints: [127.0.0.1:9], tls: { ca_file: good.key, sni: "not a name" } }
`,
			want: []string{
				"$DIR/c.yaml:2:49: clusters[0].tls.key_file: key_file is required with cert_file",
				"$DIR/c.yaml:3:49: clusters[1].tls.cert_file: cert_file is required with key_file",
				"$DIR/c.yaml:4:58: clusters[2].tls.ca_file: cannot read CA file: open $DIR/missing.pem: no such file or directory",
				"$DIR/c.yaml:4:93: clusters[2].tls.insecure_skip_verify: use ca_file or insecure_skip_verify, not both",
				"$DIR/c.yaml:5:58: clusters[3].tls.ca_file: no PEM certificate found in good.key",
				"$DIR/c.yaml:5:73: clusters[3].tls.sni: invalid server name \"not a name\"",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "c.yaml"), []byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded, want errors:\n%s", strings.Join(tt.want, "\n"))
			}
			got := strings.Split(strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), "$DIR/"), "\n")
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("errors differ\ngot:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.File == "" {
				t.Errorf("error %v does not carry a *config.Error with a file", err)
			}
		})
	}
}
