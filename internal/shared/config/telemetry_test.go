package config

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestTelemetryErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "unknown cluster, protocol, sampler, ratio, propagation",
			yaml: `telemetry:
  collector: { cluster: nope, protocol: thrift }
  tracing:
    sampler: sometimes
    ratio: 1.5
    propagation: [w3c, jaeger]
`,
			want: []string{
				`$DIR/c.yaml:2:25: telemetry.collector.cluster: unknown cluster "nope"`,
				`$DIR/c.yaml:2:41: telemetry.collector.protocol: unknown protocol "thrift" (want grpc or http)`,
				`$DIR/c.yaml:4:14: telemetry.tracing.sampler: unknown sampler "sometimes" (want parent_based, ratio, always or never)`,
				`$DIR/c.yaml:5:12: telemetry.tracing.ratio: ratio 1.5 is not in [0, 1]`,
				`$DIR/c.yaml:6:24: telemetry.tracing.propagation[1]: unknown propagation "jaeger" (want w3c, b3 or b3multi)`,
			},
		},
		{
			name: "no signal, no cluster",
			yaml: `telemetry:
  collector: {}
`,
			want: []string{
				`$DIR/c.yaml:2:3: telemetry: telemetry needs at least one of tracing, metrics, logs`,
				`$DIR/c.yaml:2:14: telemetry.collector.cluster: collector cluster is required`,
			},
		},
		{
			name: "tenants",
			yaml: `clusters:
  - { name: otel, endpoints: [127.0.0.1:4317] }
telemetry:
  collector: { cluster: otel }
  metrics: { temporality: sideways }
  tenants:
    from: { header: x-tenant, trust_domain: true }
    max_tenants: -1
    default: { spans_per_second: -2 }
    budgets:
      acme: { max_series: -1 }
`,
			want: []string{
				`$DIR/c.yaml:5:27: telemetry.metrics.temporality: unknown temporality "sideways" (want cumulative or delta)`,
				`$DIR/c.yaml:7:13: telemetry.tenants.from: tenants.from needs exactly one of header, trust_domain, spiffe_id, route_metadata, cel (found 2)`,
				`$DIR/c.yaml:8:18: telemetry.tenants.max_tenants: max_tenants -1 is negative`,
				`$DIR/c.yaml:9:34: telemetry.tenants.default.spans_per_second: spans_per_second -2 is negative`,
				`$DIR/c.yaml:11:27: telemetry.tenants.budgets.acme.max_series: max_series -1 is negative`,
			},
		},
		{
			name: "bad cel",
			yaml: `clusters:
  - { name: otel, endpoints: [127.0.0.1:4317] }
telemetry:
  collector: { cluster: otel }
  logs: {}
  tenants:
    from: { cel: "1 + 1" }
`,
			want: []string{
				`$DIR/c.yaml:7:18: telemetry.tenants.from.cel: tenant expression: result is int, want string`,
			},
		},
		{
			name: "route sampling ratio",
			yaml: `clusters:
  - { name: a, endpoints: [127.0.0.1:1] }
listeners:
  - name: web
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: all
        routes:
          - { match: { path_prefix: / }, cluster: a, tracing: { sampling_ratio: -0.5 } }
`,
			want: []string{
				`$DIR/c.yaml:9:81: listeners[0].virtual_hosts[0].routes[0].tracing.sampling_ratio: ratio -0.5 is not in [0, 1]`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "c.yaml"), []byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded, want errors:\n%s", strings.Join(tt.want, "\n"))
			}
			got := strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), "$DIR/")
			if got != strings.Join(tt.want, "\n") {
				t.Errorf("errors differ\ngot:\n%s\nwant:\n%s", got, strings.Join(tt.want, "\n"))
			}
		})
	}
}
