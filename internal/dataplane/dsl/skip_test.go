package dsl_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/omnirelay/omnirelay/internal/dataplane/dsl"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
)

const (
	requestOnlyRules = `rules:
- name: tag
  when: request.headers.get("x-tenant") == "acme"
  actions: [{set_header: {name: x-added, value: "acme"}}]`
	responseOnlyRules = `rules:
- name: response-tag
  phase: response
  when: response.status == 200
  actions:
  - set_header: {name: x-tenant-seen, expr: 'request.headers.get("x-tenant") + "/" + string(response.status)'}
  - remove_header: server`
	// bothRules carries metadata from the request phase to the response
	// phase, which only a stream that ran both calls can do.
	bothRules = `rules:
- name: tag
  when: request.headers.get("x-tenant") == "acme"
  actions:
  - set_header: {name: x-added, value: "acme"}
  - set_metadata: {key: tenant, value: acme}
- name: response-tag
  phase: response
  when: metadata.get("tenant") == "acme"
  actions:
  - set_header: {name: x-tenant-seen, expr: 'metadata["tenant"] + "/" + string(response.status)'}
  - remove_header: server`
	// Under a cost limit of 5 this condition is stopped (on a request with
	// an x- header): the rule's evaluation is an error for the watchdog.
	heavyWhen = `request.headers.exists(k, k.startsWith("x-")) && request.path.matches("^/(a|b)+c$")`
)

// callsTotal reads omnirelay_extension_calls_total{extension=rules,kind=dsl,outcome}.
func callsTotal(t *testing.T, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "omnirelay_extension_calls_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["extension"] == "rules" && labels["kind"] == "dsl" && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestPhaseSkipped: the extension filter calls a rule set only in the
// phases it has rules for (Describe's Phases), which shows in
// omnirelay_extension_calls_total, and what the rules do is unchanged.
func TestPhaseSkipped(t *testing.T) {
	tests := []struct {
		name    string
		rules   string
		calls   float64           // ok calls per request
		headers map[string]string // response headers; "" = absent
	}{
		{name: "request only", rules: requestOnlyRules, calls: 1, headers: map[string]string{
			"x-seen-added": "acme", "x-tenant-seen": "", "server": "echo"}},
		{name: "response only", rules: responseOnlyRules, calls: 1, headers: map[string]string{
			"x-seen-added": "", "x-tenant-seen": "acme/200", "server": ""}},
		{name: "both", rules: bothRules, calls: 2, headers: map[string]string{
			"x-seen-added": "acme", "x-tenant-seen": "acme/200", "server": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			c := filter.NewChain(echo{}, buildFilter(t, reg, &extv1.Extension{Package: signedPackage(t, tt.rules)}, dsl.Options{}))
			const requests = 3
			for range requests {
				s := run(c, "/web", "x-tenant", "acme")
				if s.Resp.Status != 200 {
					t.Fatalf("status = %d, want 200", s.Resp.Status)
				}
				for k, want := range tt.headers {
					got, ok := s.Resp.Header.Get(k)
					if want == "" && ok {
						t.Errorf("%s = %q, want absent", k, got)
					} else if want != "" && string(got) != want {
						t.Errorf("%s = %q, want %q", k, got, want)
					}
				}
			}
			if got, want := callsTotal(t, reg, "ok"), tt.calls*requests; got != want {
				t.Errorf("ok calls = %v, want %v", got, want)
			}
		})
	}
}

// TestPhaseSkippedPolicies: the extension's policy still applies to a
// failure in the phase a single-phase rule set runs.
func TestPhaseSkippedPolicies(t *testing.T) {
	tests := []struct {
		name    string
		rules   string
		policy  extv1.Policy
		status  int
		headers map[string]string
	}{
		{name: "request only, fail_closed", policy: extv1.Policy_FAIL_CLOSED, status: 500,
			rules: "rules:\n- {name: heavy, when: '" + heavyWhen + "', actions: [{set_header: {name: x-added, value: x}}]}"},
		{name: "request only, fail_open", policy: extv1.Policy_FAIL_OPEN, status: 200,
			rules:   "rules:\n- {name: heavy, when: '" + heavyWhen + "', actions: [{set_header: {name: x-added, value: x}}]}",
			headers: map[string]string{"x-seen-added": "", "server": "echo"}},
		// The upstream's 200 is replaced by the fail status.
		{name: "response only, fail_closed", policy: extv1.Policy_FAIL_CLOSED, status: 500,
			rules:   "rules:\n- {name: heavy, phase: response, when: '" + heavyWhen + "', actions: [{remove_header: server}]}",
			headers: map[string]string{"server": ""}},
		{name: "response only, fail_open", policy: extv1.Policy_FAIL_OPEN, status: 200,
			rules:   "rules:\n- {name: heavy, phase: response, when: '" + heavyWhen + "', actions: [{remove_header: server}]}",
			headers: map[string]string{"server": "echo"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			c := filter.NewChain(echo{}, buildFilter(t, reg, &extv1.Extension{
				Package: signedPackage(t, tt.rules), Policy: tt.policy, FailStatus: 500,
			}, dsl.Options{CostLimit: 5}))
			s := run(c, "/ababababc", "x-a", "1")
			if s.Resp.Status != tt.status {
				t.Fatalf("status = %d, want %d", s.Resp.Status, tt.status)
			}
			for k, want := range tt.headers {
				got, ok := s.Resp.Header.Get(k)
				if want == "" && ok {
					t.Errorf("%s = %q, want absent", k, got)
				} else if want != "" && string(got) != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			// One failed call in the phase that has rules; the other phase
			// is not called (it would count ok).
			if got := callsTotal(t, reg, "error"); got != 1 {
				t.Errorf("error calls = %v, want 1", got)
			}
			if got := callsTotal(t, reg, "ok"); got != 0 {
				t.Errorf("ok calls = %v, want 0", got)
			}
		})
	}
}

// rewriter is a filter after the rules that rewrites the path (and so the
// query), as a later filter of the chain may.
type rewriter struct{}

func (rewriter) OnRequest(s *filter.Stream) filter.Status {
	s.Req.SetPath("/other?id=2")
	return filter.Continue
}

func (rewriter) OnResponse(*filter.Stream) {}

// TestResponseSeesRequestNow: response rules read the request as it is when
// the response arrives, whether or not the state was kept from the request
// phase (a kept state must not hold the query of the path it saw then).
func TestResponseSeesRequestNow(t *testing.T) {
	const responseRule = `
- name: echo-query
  phase: response
  actions: [{set_header: {name: x-query-id, expr: 'request.query.get("id") + " " + request.path'}}]`
	tests := []struct {
		name, rules string
	}{
		{name: "response only", rules: "rules:" + responseRule},
		{name: "both phases", rules: "rules:\n- {name: tag, actions: [{set_metadata: {key: k, value: v}}]}" + responseRule},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := filter.NewChain(echo{}, buildFilter(t, nil, &extv1.Extension{Package: signedPackage(t, tt.rules)}, dsl.Options{}), rewriter{})
			s := run(c, "/first?id=1")
			if got := s.Resp.Header.GetString("x-query-id"); got != "2 /other" {
				t.Fatalf("x-query-id = %q, want %q", got, "2 /other")
			}
		})
	}
}
