package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseSample(t *testing.T) {
	c, err := Load("testdata/sample.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := c.Admin.EffectiveAddress(); got != "127.0.0.1:9901" {
		t.Errorf("admin address = %q", got)
	}
	if len(c.Listeners) != 2 || len(c.Clusters) != 2 {
		t.Fatalf("got %d listeners, %d clusters", len(c.Listeners), len(c.Clusters))
	}
	web := c.Listeners[0]
	r0, r1 := web.VirtualHosts[0].Routes[0], web.VirtualHosts[0].Routes[1]
	checks := []struct {
		name      string
		got, want any
	}{
		{"web protocol", web.EffectiveProtocol(), ProtocolHTTP},
		{"domains", strings.Join(web.VirtualHosts[0].Domains, ","), "shop.example.com,*"},
		{"canary header", r0.Match.Headers[0].Name + "=" + r0.Match.Headers[0].Exact, "x-canary=true"},
		{"canary cluster", r0.Cluster, "shop-v2"},
		{"split", len(r1.WeightedClusters), 2},
		{"split weight", r1.WeightedClusters[0].Weight, uint32(80)},
		{"timeout", r1.Timeout.Std(), 5 * time.Second},
		{"retry attempts", r1.Retry.Attempts, uint32(3)},
		{"retry on", strings.Join(r1.Retry.On, ","), "connect-failure,reset,5xx"},
		{"per try", r1.Retry.PerTryTimeout.Std(), time.Second},
		{"db protocol", c.Listeners[1].EffectiveProtocol(), ProtocolTCP},
		{"db cluster", c.Listeners[1].Cluster, "shop-v1"},
		{"lb", c.Clusters[0].EffectiveLB(), LBLeastRequest},
		{"endpoints", c.Clusters[0].Endpoints[1].Address, "127.0.0.1:9002"},
		{"hc path", c.Clusters[0].HealthCheck.HTTP.Path, "/healthz"},
		{"hc unhealthy", *c.Clusters[0].HealthCheck.UnhealthyThreshold, uint32(2)},
		{"cb pending", *c.Clusters[0].CircuitBreaker.MaxPending, uint32(256)},
		{"od ejection", c.Clusters[0].OutlierDetection.BaseEjectionTime.Std(), 30 * time.Second},
		{"v2 protocol", c.Clusters[1].EffectiveProtocol(), UpstreamAuto},
		{"v2 lb default", c.Clusters[1].EffectiveLB(), LBRoundRobin},
	}
	for _, ck := range checks {
		t.Run(ck.name, func(t *testing.T) {
			if ck.got != ck.want {
				t.Errorf("got %v, want %v", ck.got, ck.want)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		check func(t *testing.T, c *Config)
	}{
		{
			name: "colon scalars in flow lists nested in flow mappings",
			yaml: "clusters: [{ name: a, endpoints: [127.0.0.1:9, \"127.0.0.1:10\", { address: 127.0.0.1:11 }] }]\n" +
				"listeners: [{ name: l, address: 127.0.0.1:80, virtual_hosts: [{ name: v, domains: [a.com:8080, \"x.com:90\"], routes: [{ cluster: a }] }] }]\n",
			check: func(t *testing.T, c *Config) {
				var got []string
				for _, e := range c.Clusters[0].Endpoints {
					got = append(got, e.Address)
				}
				if strings.Join(got, " ") != "127.0.0.1:9 127.0.0.1:10 127.0.0.1:11" {
					t.Errorf("endpoints = %q", got)
				}
				if d := c.Listeners[0].VirtualHosts[0].Domains; d[0] != "a.com:8080" || d[1] != "x.com:90" {
					t.Errorf("domains = %q", d)
				}
			},
		},
		{
			name: "string maps keep document order and take scalars as written",
			yaml: "listeners: [{ name: l, address: 127.0.0.1:80, virtual_hosts: [{ name: v, routes: [{ cluster: a, request_headers_add: { z: 1, a: true, m: x } }] }] }]\n" +
				"clusters: [{ name: a, endpoints: [127.0.0.1:9] }]\n",
			check: func(t *testing.T, c *Config) {
				var got []string
				for _, kv := range c.Listeners[0].VirtualHosts[0].Routes[0].RequestHeadersAdd {
					got = append(got, kv.Key+"="+kv.Value)
				}
				if strings.Join(got, " ") != "z=1 a=true m=x" {
					t.Errorf("headers = %q", got)
				}
			},
		},
		{
			name: "version, zero timeout, anchors",
			yaml: "version: omnirelay.v1\n" +
				"clusters:\n  - &c { name: a, endpoints: [127.0.0.1:9] }\n" +
				"listeners:\n  - { name: l, address: \":80\", virtual_hosts: [{ name: v, routes: [{ cluster: a, timeout: 0 }] }] }\n",
			check: func(t *testing.T, c *Config) {
				if to := c.Listeners[0].VirtualHosts[0].Routes[0].Timeout; to == nil || *to != 0 {
					t.Errorf("timeout = %v, want explicit 0", to)
				}
			},
		},
		{
			name: "eds cluster without endpoints",
			yaml: "clusters: [{ name: a, eds: true }]\n",
			check: func(t *testing.T, c *Config) {
				if !c.Clusters[0].EDS {
					t.Error("eds not set")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("t.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestSkipFileChecks(t *testing.T) {
	doc := []byte(`
listeners:
  - name: web
    address: 127.0.0.1:443
    protocol: https
    tls: { certificates: [{ cert_file: /nonexistent/a.crt, key_file: /nonexistent/a.key }] }
    virtual_hosts: [{ name: v, routes: [{ cluster: a }] }]
clusters: [{ name: a, endpoints: [127.0.0.1:9], tls: { ca_file: /nonexistent/ca.pem } }]
`)
	if _, err := Parse("c.yaml", doc); err == nil {
		t.Fatal("Parse with missing files succeeded")
	}
	if _, err := Parse("c.yaml", doc, SkipFileChecks()); err != nil {
		t.Fatalf("Parse with SkipFileChecks: %v", err)
	}
}

func TestValidateBuiltInCode(t *testing.T) {
	c := &Config{
		Listeners: []Listener{{Name: "l", Address: "127.0.0.1:80", Protocol: ProtocolTCP, Cluster: "missing"}},
	}
	err := c.Validate()
	want := `listeners[0].cluster: unknown cluster "missing"`
	if err == nil || err.Error() != want {
		t.Fatalf("Validate() = %v, want %s", err, want)
	}
	var ce *Error
	if !errors.As(err, &ce) || ce.Line != 0 || ce.Path != "listeners[0].cluster" {
		t.Errorf("error = %#v", ce)
	}
}

func TestFilePath(t *testing.T) {
	c, err := Parse(filepath.Join("conf", "x.yaml"), []byte("admin: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, in, want string }{
		{"relative", "certs/a.pem", filepath.Join("conf", "certs", "a.pem")},
		{"absolute", "/etc/a.pem", "/etc/a.pem"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.FilePath(tt.in); got != tt.want {
				t.Errorf("FilePath(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load = %v, want a wrapped ErrNotExist", err)
	}
}

func BenchmarkParseSample(b *testing.B) {
	data, err := os.ReadFile("testdata/sample.yaml")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("sample.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
}
