// Package dslrules owns the OmniRelay rules language: the YAML format of a
// "dsl" extension package's payload, its structural validation and the
// type-checking of its CEL expressions against the variables the proxy
// provides.
//
// It lives under internal/shared so that omnictl (ext pack), MeshKit (when a
// package is pushed) and the data plane (internal/dataplane/dsl, which turns
// the checked rules into programs) all refuse the same rule sets with the
// same messages, without the control plane importing the data plane.
//
// A rule set reads:
//
//	rules:
//	- name: tag-api
//	  when: request.path.startsWith("/api/")
//	  actions:
//	  - set_header: {name: x-api, value: "yes"}
//	  - set_header: {name: x-user, expr: 'jwt.claims[?"sub"].orValue("anonymous")'}
//
// Conditions and expressions are CEL (cel.dev/cel-go); the variables are
// listed in Variables.
package dslrules

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/goccy/go-yaml"
)

// ABI is the manifest ABI a DSL package declares; the runtime accepts it.
const ABI = "omnirelay-dsl/v1"

// Limits keep a hostile payload from making the validator or the proxy work
// without bound before anything runs.
const (
	MaxPayloadBytes = 256 << 10
	MaxRules        = 256
	MaxActions      = 32
	MaxExprBytes    = 4 << 10
)

// Phase is when a rule runs.
type Phase string

// Phases. Request is the default.
const (
	PhaseRequest  Phase = "request"
	PhaseResponse Phase = "response"
)

// RuleSet is a parsed payload.
type RuleSet struct {
	Rules []Rule `yaml:"rules"`
}

// Rule applies its actions, in order, when its condition holds.
type Rule struct {
	Name string `yaml:"name"`
	// When is a CEL bool expression; empty means always.
	When    string   `yaml:"when"`
	Phase   Phase    `yaml:"phase"`
	Actions []Action `yaml:"actions"`
}

// Action is exactly one of its fields.
type Action struct {
	SetHeader    *SetHeader   `yaml:"set_header"`
	RemoveHeader string       `yaml:"remove_header"`
	RewritePath  string       `yaml:"rewrite_path"` // CEL string expression
	Deny         *Deny        `yaml:"deny"`
	RouteTo      string       `yaml:"route_to"` // cluster name (literal)
	Respond      *Respond     `yaml:"respond"`
	SetMetadata  *SetMetadata `yaml:"set_metadata"`
}

// Value is a literal or a CEL string expression: exactly one of Value and
// Expr. Keeping them apart spares users from quoting literals as CEL.
type Value struct {
	Value *string `yaml:"value"`
	Expr  string  `yaml:"expr"`
}

// SetHeader sets (replaces) a header.
type SetHeader struct {
	Name  string `yaml:"name"`
	Value `yaml:",inline"`
}

// Deny answers with Status (default 403) and Body.
type Deny struct {
	Status int    `yaml:"status"`
	Body   string `yaml:"body"`
}

// Respond answers directly with a status, body and headers.
type Respond struct {
	Status  int               `yaml:"status"`
	Body    string            `yaml:"body"`
	Headers map[string]string `yaml:"headers"`
}

// SetMetadata records a key for later rules (the metadata variable) and for
// other filters of the stream.
type SetMetadata struct {
	Key   string `yaml:"key"`
	Value `yaml:",inline"`
}

// ActionKind names the field an Action sets.
type ActionKind uint8

// Action kinds.
const (
	ActSetHeader ActionKind = iota + 1
	ActRemoveHeader
	ActRewritePath
	ActDeny
	ActRouteTo
	ActRespond
	ActSetMetadata
)

func (k ActionKind) String() string {
	switch k {
	case ActSetHeader:
		return "set_header"
	case ActRemoveHeader:
		return "remove_header"
	case ActRewritePath:
		return "rewrite_path"
	case ActDeny:
		return "deny"
	case ActRouteTo:
		return "route_to"
	case ActRespond:
		return "respond"
	case ActSetMetadata:
		return "set_metadata"
	}
	return "unknown"
}

// Kind returns the action's kind, or an error when not exactly one field is
// set.
func (a *Action) Kind() (ActionKind, error) {
	var kinds []ActionKind
	if a.SetHeader != nil {
		kinds = append(kinds, ActSetHeader)
	}
	if a.RemoveHeader != "" {
		kinds = append(kinds, ActRemoveHeader)
	}
	if a.RewritePath != "" {
		kinds = append(kinds, ActRewritePath)
	}
	if a.Deny != nil {
		kinds = append(kinds, ActDeny)
	}
	if a.RouteTo != "" {
		kinds = append(kinds, ActRouteTo)
	}
	if a.Respond != nil {
		kinds = append(kinds, ActRespond)
	}
	if a.SetMetadata != nil {
		kinds = append(kinds, ActSetMetadata)
	}
	switch len(kinds) {
	case 1:
		return kinds[0], nil
	case 0:
		return 0, errors.New("no action set (want one of set_header, remove_header, rewrite_path, deny, route_to, respond, set_metadata)")
	}
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = k.String()
	}
	return 0, fmt.Errorf("several actions in one entry (%s): use one list entry per action", strings.Join(names, ", "))
}

// Parse decodes a payload strictly (unknown fields are errors) and checks
// its structure; it does not compile expressions (see Check).
func Parse(src []byte) (*RuleSet, error) {
	if len(src) > MaxPayloadBytes {
		return nil, fmt.Errorf("rules: payload is %d bytes, limit %d", len(src), MaxPayloadBytes)
	}
	if len(bytes.TrimSpace(src)) == 0 {
		return nil, errors.New("rules: empty payload")
	}
	var rs RuleSet
	if err := yaml.UnmarshalWithOptions(src, &rs, yaml.DisallowUnknownField()); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	if err := rs.validate(); err != nil {
		return nil, err
	}
	return &rs, nil
}

func (rs *RuleSet) validate() error {
	if len(rs.Rules) == 0 {
		return errors.New("rules: no rules")
	}
	if len(rs.Rules) > MaxRules {
		return fmt.Errorf("rules: %d rules, limit %d", len(rs.Rules), MaxRules)
	}
	seen := make(map[string]int, len(rs.Rules))
	for i := range rs.Rules {
		r := &rs.Rules[i]
		if r.Name == "" {
			return fmt.Errorf("rules[%d]: name is required", i)
		}
		if j, dup := seen[r.Name]; dup {
			return fmt.Errorf("rules[%d] %q: name already used by rules[%d]", i, r.Name, j)
		}
		seen[r.Name] = i
		if err := r.validate(); err != nil {
			return fmt.Errorf("rules[%d] %q: %w", i, r.Name, err)
		}
	}
	return nil
}

func (r *Rule) validate() error {
	switch r.Phase {
	case "":
		r.Phase = PhaseRequest
	case PhaseRequest, PhaseResponse:
	default:
		return fmt.Errorf("phase %q: want request or response", r.Phase)
	}
	if len(r.When) > MaxExprBytes {
		return fmt.Errorf("when: %d bytes, limit %d", len(r.When), MaxExprBytes)
	}
	if len(r.Actions) == 0 {
		return errors.New("actions: none")
	}
	if len(r.Actions) > MaxActions {
		return fmt.Errorf("actions: %d, limit %d", len(r.Actions), MaxActions)
	}
	for i := range r.Actions {
		if err := r.Actions[i].validate(r.Phase); err != nil {
			return fmt.Errorf("actions[%d]: %w", i, err)
		}
	}
	return nil
}

func (a *Action) validate(phase Phase) error {
	k, err := a.Kind()
	if err != nil {
		return err
	}
	if phase == PhaseResponse {
		switch k {
		case ActSetHeader, ActRemoveHeader, ActSetMetadata:
		default:
			return fmt.Errorf("%s: not allowed in the response phase (set_header, remove_header and set_metadata are)", k)
		}
	}
	switch k {
	case ActSetHeader:
		if err := checkHeaderName(a.SetHeader.Name); err != nil {
			return fmt.Errorf("set_header: %w", err)
		}
		if err := a.SetHeader.Value.validate(); err != nil {
			return fmt.Errorf("set_header %q: %w", a.SetHeader.Name, err)
		}
	case ActRemoveHeader:
		if err := checkHeaderName(a.RemoveHeader); err != nil {
			return fmt.Errorf("remove_header: %w", err)
		}
	case ActRewritePath:
		if len(a.RewritePath) > MaxExprBytes {
			return fmt.Errorf("rewrite_path: %d bytes, limit %d", len(a.RewritePath), MaxExprBytes)
		}
	case ActDeny:
		if a.Deny.Status == 0 {
			a.Deny.Status = http.StatusForbidden
		}
		if err := checkStatus(a.Deny.Status); err != nil {
			return fmt.Errorf("deny: %w", err)
		}
	case ActRouteTo:
		if strings.ContainsAny(a.RouteTo, " \t\r\n") {
			return fmt.Errorf("route_to %q: a cluster name has no white space", a.RouteTo)
		}
	case ActRespond:
		if a.Respond.Status == 0 {
			a.Respond.Status = http.StatusOK
		}
		if err := checkStatus(a.Respond.Status); err != nil {
			return fmt.Errorf("respond: %w", err)
		}
		for name, v := range a.Respond.Headers {
			if err := checkHeaderName(name); err != nil {
				return fmt.Errorf("respond: headers: %w", err)
			}
			if strings.ContainsAny(v, "\r\n\x00") {
				return fmt.Errorf("respond: headers: %q: value holds CR, LF or NUL", name)
			}
		}
	case ActSetMetadata:
		if a.SetMetadata.Key == "" {
			return errors.New("set_metadata: key is required")
		}
		if err := a.SetMetadata.Value.validate(); err != nil {
			return fmt.Errorf("set_metadata %q: %w", a.SetMetadata.Key, err)
		}
	}
	return nil
}

func (v *Value) validate() error {
	switch {
	case v.Value != nil && v.Expr != "":
		return errors.New("both value and expr: set one")
	case v.Value == nil && v.Expr == "":
		return errors.New("value or expr is required")
	case v.Value != nil && strings.ContainsAny(*v.Value, "\r\n\x00"):
		return errors.New("value holds CR, LF or NUL")
	case len(v.Expr) > MaxExprBytes:
		return fmt.Errorf("expr: %d bytes, limit %d", len(v.Expr), MaxExprBytes)
	}
	return nil
}

func checkStatus(s int) error {
	if s < 200 || s > 599 {
		return fmt.Errorf("status %d: want 200-599", s)
	}
	return nil
}

// checkHeaderName accepts RFC 9110 token characters. Pseudo-headers and
// hop-by-hop names are refused: the codecs own them.
func checkHeaderName(n string) error {
	if n == "" {
		return errors.New("header name is required")
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return fmt.Errorf("header name %q: character %q is not allowed", n, c)
		}
	}
	switch strings.ToLower(n) {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "host", "content-length":
		return fmt.Errorf("header name %q: owned by the proxy's codecs", n)
	}
	return nil
}
