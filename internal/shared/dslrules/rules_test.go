package dslrules

import (
	"strings"
	"testing"
)

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // substrings of the error
	}{
		{name: "empty", src: "", want: []string{"empty payload"}},
		{name: "no rules", src: "rules: []", want: []string{"no rules"}},
		{name: "unknown field", src: "rules:\n- name: a\n  wen: true\n  actions: [{remove_header: x}]", want: []string{"wen"}},
		{name: "missing name", src: "rules:\n- actions: [{remove_header: x}]", want: []string{"rules[0]: name is required"}},
		{name: "duplicate name", src: "rules:\n- {name: a, actions: [{remove_header: x}]}\n- {name: a, actions: [{remove_header: y}]}", want: []string{`rules[1] "a"`, "already used"}},
		{name: "no actions", src: "rules:\n- {name: a, when: 'true'}", want: []string{`rules[0] "a"`, "actions: none"}},
		{name: "two actions in one entry", src: "rules:\n- {name: a, actions: [{remove_header: x, route_to: c}]}", want: []string{`"a"`, "several actions"}},
		{name: "empty action", src: "rules:\n- {name: a, actions: [{}]}", want: []string{"no action set"}},
		{name: "bad phase", src: "rules:\n- {name: a, phase: later, actions: [{remove_header: x}]}", want: []string{`phase "later"`}},
		{name: "deny in response phase", src: "rules:\n- {name: a, phase: response, actions: [{deny: {}}]}", want: []string{`"a"`, "deny: not allowed in the response phase"}},
		{name: "bad header name", src: "rules:\n- {name: a, actions: [{set_header: {name: 'x y', value: v}}]}", want: []string{`header name "x y"`}},
		{name: "hop-by-hop header", src: "rules:\n- {name: a, actions: [{remove_header: connection}]}", want: []string{"owned by the proxy"}},
		{name: "value and expr", src: "rules:\n- {name: a, actions: [{set_header: {name: x, value: v, expr: '\"v\"'}}]}", want: []string{"both value and expr"}},
		{name: "neither value nor expr", src: "rules:\n- {name: a, actions: [{set_header: {name: x}}]}", want: []string{"value or expr is required"}},
		{name: "bad deny status", src: "rules:\n- {name: a, actions: [{deny: {status: 99}}]}", want: []string{"status 99"}},
		{name: "syntax error names rule and position", src: "rules:\n- {name: tag-api, when: 'request.path.startsWith(', actions: [{remove_header: x}]}", want: []string{`rules[0] "tag-api": when:`, "1:25"}},
		{name: "undeclared variable", src: "rules:\n- {name: typo, when: 'request.pth == \"/\"', actions: [{remove_header: x}]}", want: []string{`"typo": when:`, "undeclared reference", "request.pth"}},
		{name: "condition not bool", src: "rules:\n- {name: nb, when: 'request.path', actions: [{remove_header: x}]}", want: []string{`"nb": when:`, "has type string, want bool"}},
		{name: "value not string", src: "rules:\n- {name: ns, actions: [{set_header: {name: x, expr: 'size(request.path)'}}]}", want: []string{`"ns": actions[0]: set_header.expr:`, "want string"}},
		{name: "rewrite not string", src: "rules:\n- {name: rw, actions: [{rewrite_path: 'request.method == \"GET\"'}]}", want: []string{`"rw": actions[0]: rewrite_path:`, "want string"}},
		{name: "response variable in request phase", src: "rules:\n- {name: rq, when: 'response.status == 200', actions: [{remove_header: x}]}", want: []string{`"rq": when:`, "undeclared reference"}},
		{name: "wrong argument type", src: "rules:\n- {name: args, when: 'request.path.startsWith(1)', actions: [{remove_header: x}]}", want: []string{`"args": when:`, "found no matching overload"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile([]byte(tt.src))
			if err == nil {
				t.Fatalf("Compile succeeded, want an error containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestCompileValid(t *testing.T) {
	src := `rules:
- name: tag
  when: request.path.startsWith("/api") && request.headers.get("x-tenant", "none") != "none"
  actions:
  - set_header: {name: x-api, value: "yes"}
  - set_header: {name: x-user, expr: 'string(jwt.claims[?"sub"].orValue("anonymous"))'}
  - set_metadata: {key: tenant, expr: 'request.headers.get("x-tenant")'}
- name: rewrite
  when: request.query.get("v") == "2"
  actions: [{rewrite_path: '"/v2" + request.path'}]
- name: to-canary
  when: peer.spiffe_id.endsWith("/canary") || connection.remote_ip.startsWith("10.")
  actions: [{route_to: backend-canary}]
- name: respond
  when: request.path == "/ping"
  actions: [{respond: {status: 200, body: pong, headers: {content-type: text/plain}}}]
- name: resp
  phase: response
  when: response.status >= 500 && metadata.get("tenant") != ""
  actions: [{set_header: {name: x-status, expr: 'string(response.status)'}}]
`
	c, err := Compile([]byte(src))
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	if len(c.Rules) != 5 || c.Rules[4].Rule.Phase != PhaseResponse || c.Rules[0].Rule.Phase != PhaseRequest {
		t.Fatalf("rules = %+v", c.Rules)
	}
	if c.Rules[0].Exprs[0] != nil || c.Rules[0].Exprs[1] == nil {
		t.Errorf("literal value compiled as expression or expression missing")
	}
	if c.Rules[3].Rule.Actions[0].Respond.Status != 200 {
		t.Errorf("respond status = %d", c.Rules[3].Rule.Actions[0].Respond.Status)
	}
}

func TestMaxCost(t *testing.T) {
	env, err := NewEnv(PhaseRequest)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		expr    string
		atMost  uint64
		atLeast uint64
	}{
		{name: "prefix test", expr: `request.path.startsWith("/api")`, atMost: 10},
		{name: "header lookup", expr: `request.headers.get("x-tenant") == "acme"`, atMost: 10},
		{name: "regex over a header-sized string", expr: `request.path.matches("^/a+$")`, atLeast: 1000},
		{name: "iteration over headers", expr: `request.headers.exists(k, k.startsWith("x-"))`, atLeast: 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ast, iss := env.Compile(tt.expr)
			if iss.Err() != nil {
				t.Fatal(iss.Err())
			}
			got, err := MaxCost(env, ast)
			if err != nil {
				t.Fatal(err)
			}
			if (tt.atMost > 0 && got > tt.atMost) || got < tt.atLeast {
				t.Errorf("MaxCost = %d, want in [%d, %d]", got, tt.atLeast, tt.atMost)
			}
		})
	}
}

func FuzzCompile(f *testing.F) {
	f.Add([]byte("rules:\n- {name: a, when: 'request.path == \"/\"', actions: [{deny: {}}]}"))
	f.Add([]byte("rules:\n- {name: a, actions: [{set_header: {name: x, expr: 'request.headers.get(\"y\")'}}]}"))
	f.Add([]byte("rules: [{name: r, phase: response, actions: [{remove_header: server}]}]"))
	f.Fuzz(func(t *testing.T, src []byte) {
		c, err := Compile(src)
		if err != nil {
			return
		}
		for i := range c.Rules {
			if c.Rules[i].Rule.Name == "" || len(c.Rules[i].Exprs) != len(c.Rules[i].Rule.Actions) {
				t.Fatalf("accepted rule %d is malformed: %+v", i, c.Rules[i])
			}
		}
	})
}
