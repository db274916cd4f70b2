package meshkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	"github.com/omnirelay/omnirelay/internal/controlplane/versions"
	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// ErrNoCanary is returned by Promote and Rollback for an extension with no
// canary in the desired configuration.
var ErrNoCanary = errors.New("no canary")

// ErrNoExtension is returned when the desired configuration has no
// extension entry of the given name.
var ErrNoExtension = errors.New("no such extension")

// RolloutResult is what a rollout step changed.
type RolloutResult struct {
	// Version is the desired configuration version it stored.
	Version string
	// Paths are the extension entries it rewrote (document paths).
	Paths []string
}

// Canary starts, or moves, a canary of extension name: every entry of it
// in the desired configuration runs pkg for percent % of the requests (by
// "requests" or "") or of the proxies (by "proxies"), the package it runs
// now being kept as the previous one. On an extension already in canary the
// previous package stays and pkg and percent replace the canary's.
func (m *MeshKit) Canary(ctx context.Context, name, pkg string, percent uint32, by string) (RolloutResult, error) {
	if percent > 100 {
		return RolloutResult{}, &config.Error{Path: "percent", Reason: fmt.Sprintf("percent %d is more than 100", percent)}
	}
	switch by {
	case "", config.CanaryByRequests, config.CanaryByProxies:
	default:
		return RolloutResult{}, &config.Error{Path: "by", Reason: fmt.Sprintf("by %q: want requests or proxies", by)}
	}
	if pkg == "" {
		return RolloutResult{}, &config.Error{Path: "package", Reason: "a package (store:NAME@VERSION) is required"}
	}
	return m.editExtension(ctx, name, "canary", func(x *config.Extension) error {
		c := &config.ExtensionCanary{Percent: percent, By: by, PreviousPackage: x.Package}
		switch {
		case x.Canary != nil && x.Canary.PreviousPackage == pkg:
			return &config.Error{Path: "package", Reason: fmt.Sprintf("%s is the package extension %q's canary replaces: roll back instead", pkg, name)}
		case x.Canary != nil:
			c.PreviousPackage, c.PreviousConfig = x.Canary.PreviousPackage, x.Canary.PreviousConfig
		case x.Package == pkg:
			return &config.Error{Path: "package", Reason: fmt.Sprintf("extension %q already runs %s", name, pkg)}
		}
		x.Package, x.Canary = pkg, c
		return nil
	})
}

// Promote ends extension name's canary keeping the new package: the
// previous one is dropped. Entries of name with no canary are left as they
// are; none with a canary is ErrNoCanary.
func (m *MeshKit) Promote(ctx context.Context, name string) (RolloutResult, error) {
	return m.editExtension(ctx, name, "promote", func(x *config.Extension) error {
		if x.Canary == nil {
			return errSkip
		}
		x.Canary = nil
		return nil
	})
}

// Rollback ends extension name's canary restoring the previous package and
// its config. Entries of name with no canary are left as they are; none
// with a canary is ErrNoCanary.
func (m *MeshKit) Rollback(ctx context.Context, name string) (RolloutResult, error) {
	return m.editExtension(ctx, name, "roll back", func(x *config.Extension) error {
		c := x.Canary
		if c == nil {
			return errSkip
		}
		x.Package = c.PreviousPackage
		if c.PreviousConfig != "" {
			x.Config = c.PreviousConfig
		}
		x.Canary = nil
		return nil
	})
}

// errSkip is an edit's answer for an entry the step leaves as it is.
var errSkip = errors.New("entry left as it is")

// editExtension rewrites every entry of extension name in the stored
// desired configuration with edit (rewriteExtension), validates the result
// as an apply does, and stores it only if the stored document did not
// change meanwhile (a concurrent apply or rollout step makes this one fail
// with store.ErrConflict, never half-apply).
func (m *MeshKit) editExtension(ctx context.Context, name, step string, edit func(*config.Extension) error) (RolloutResult, error) {
	m.rolloutMu.Lock()
	defer m.rolloutMu.Unlock()
	if err := m.refuseDuringRollout(ctx, step+" of extension "+name); err != nil {
		return RolloutResult{}, err
	}
	kv, d, err := m.readDesired(ctx)
	if err != nil {
		return RolloutResult{}, err
	}
	if d == nil {
		return RolloutResult{}, fmt.Errorf("no configuration applied yet: %w", store.ErrNotFound)
	}
	data, paths, err := rewriteExtension(d.Filename, d.YAML, name, step, edit)
	if err != nil {
		return RolloutResult{}, fmt.Errorf("configuration %s: %w", d.Version, err)
	}
	res := RolloutResult{Paths: paths}
	next, err := m.parseAndCheck(d.Filename, data)
	if err != nil {
		return RolloutResult{}, fmt.Errorf("%s of extension %q makes an invalid configuration: %w", step, name, err)
	}
	nd, err := m.commit(ctx, kv, d, d.Filename, data, next, versions.OriginExtension, []string{fmt.Sprintf("extension %s: %s", name, step)})
	if err != nil {
		return RolloutResult{}, err
	}
	m.opt.Log.Info("extension rollout step applied", "step", step, "extension", name, "entries", len(res.Paths),
		"from", d.Version, "version", nd.Version)
	res.Version = nd.Version
	return res, nil
}

// rewriteExtension returns doc with every entry of extension name passed
// through edit (errSkip leaves an entry as it is), and the document paths
// of the entries it rewrote. Entries are rewritten in place in the YAML
// text, as flow mappings: the rest of the document is kept byte for byte
// (the YAML library's printer is not used: it does not round-trip every
// document, e.g. a flow sequence of host:port); comments inside a
// rewritten entry are not kept. The result is not validated.
func rewriteExtension(filename string, doc []byte, name, step string, edit func(*config.Extension) error) ([]byte, []string, error) {
	cfg, err := config.Parse(filename, doc, config.ServedByMeshKit())
	if err != nil {
		return nil, nil, err
	}
	file, err := parser.ParseBytes(doc, parser.ParseComments)
	if err != nil {
		return nil, nil, err
	}
	var (
		paths []string
		edits []splice
		found bool
	)
	for i, l := range cfg.Listeners {
		for j, f := range l.Filters {
			if f.Extension == nil || f.Extension.Name != name {
				continue
			}
			found = true
			x := *f.Extension
			if err := edit(&x); errors.Is(err, errSkip) {
				continue
			} else if err != nil {
				return nil, nil, err
			}
			path := fmt.Sprintf("$.listeners[%d].filters[%d].extension", i, j)
			flow, err := yaml.MarshalWithOptions(extensionYAML(&x), yaml.Flow(true))
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", path, err)
			}
			sp, err := nodeSpan(file, doc, path)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: rewrite: %w", path, err)
			}
			sp.text = strings.TrimSpace(string(flow))
			edits = append(edits, sp)
			paths = append(paths, strings.TrimPrefix(path, "$."))
		}
	}
	switch {
	case !found:
		return nil, nil, fmt.Errorf("extension %q: %w", name, ErrNoExtension)
	case len(paths) == 0:
		return nil, nil, fmt.Errorf("extension %q: %w to %s", name, ErrNoCanary, step)
	}
	return applySplices(doc, edits), paths, nil
}

// extensionYAML is x as a YAML mapping holding only the keys that are set,
// in the order the reference documents them.
func extensionYAML(x *config.Extension) yaml.MapSlice {
	out := yaml.MapSlice{{Key: "name", Value: x.Name}, {Key: "package", Value: x.Package}}
	add := func(k string, v any, set bool) {
		if set {
			out = append(out, yaml.MapItem{Key: k, Value: v})
		}
	}
	add("config", x.Config, x.Config != "")
	add("policy", x.Policy, x.Policy != "")
	add("fallback", x.Fallback, x.Fallback != "")
	if x.Deadline != nil {
		add("deadline", x.Deadline.String(), true)
	}
	add("fail_status", x.FailStatus, x.FailStatus != 0)
	if c := x.Canary; c != nil {
		cm := yaml.MapSlice{{Key: "percent", Value: c.Percent}}
		if c.By != "" {
			cm = append(cm, yaml.MapItem{Key: "by", Value: c.By})
		}
		cm = append(cm, yaml.MapItem{Key: "previous_package", Value: c.PreviousPackage})
		if c.PreviousConfig != "" {
			cm = append(cm, yaml.MapItem{Key: "previous_config", Value: c.PreviousConfig})
		}
		out = append(out, yaml.MapItem{Key: "canary", Value: cm})
	}
	return out
}

// splice replaces doc[from:to] with text; block is set when the replaced
// node was a block mapping (text then goes on its own indented line).
type splice struct {
	from, to int
	indent   int
	block    bool
	text     string
}

// nodeSpan finds the bytes of the mapping at path in doc: from its "{" to
// the matching "}" for a flow mapping; for a block mapping, its lines, up
// to the first line indented less than its keys.
func nodeSpan(file *ast.File, doc []byte, path string) (splice, error) {
	p, err := yaml.PathString(path)
	if err != nil {
		return splice{}, err
	}
	n, err := p.FilterFile(file)
	if err != nil {
		return splice{}, err
	}
	if _, ok := n.(*ast.MappingNode); !ok {
		return splice{}, fmt.Errorf("not a mapping (%s)", n.Type())
	}
	tk := n.GetToken()
	if tk == nil || tk.Position == nil {
		return splice{}, errors.New("no position")
	}
	lines := splitLines(doc)
	line := tk.Position.Line - 1
	if line < 0 || line >= len(lines) {
		return splice{}, fmt.Errorf("line %d out of range", tk.Position.Line)
	}
	lineStart := 0
	for _, l := range lines[:line] {
		lineStart += len(l)
	}
	if tk.Value == "{" {
		from := lineStart + tk.Position.Column - 1
		if from >= len(doc) || doc[from] != '{' {
			return splice{}, fmt.Errorf("no \"{\" at line %d column %d", tk.Position.Line, tk.Position.Column)
		}
		to, err := flowEnd(doc, from)
		if err != nil {
			return splice{}, err
		}
		return splice{from: from, to: to}, nil
	}
	indent := indentOf(lines[line])
	to := lineStart + len(lines[line])
	for _, l := range lines[line+1:] {
		t := bytes.TrimSpace(l)
		if len(t) > 0 && indentOf(l) < indent {
			break
		}
		to += len(l)
	}
	return splice{from: lineStart, to: to, indent: indent, block: true}, nil
}

// splitLines splits doc after each line break as YAML counts them: "\n",
// "\r\n" and a lone "\r".
func splitLines(doc []byte) [][]byte {
	var lines [][]byte
	start := 0
	for i := 0; i < len(doc); i++ {
		switch {
		case doc[i] == '\n', doc[i] == '\r' && (i+1 == len(doc) || doc[i+1] != '\n'):
			lines = append(lines, doc[start:i+1])
			start = i + 1
		}
	}
	if start < len(doc) {
		lines = append(lines, doc[start:])
	}
	return lines
}

func indentOf(l []byte) int { return len(l) - len(bytes.TrimLeft(l, " ")) }

// flowEnd returns the offset just past the "}" closing the flow mapping
// opened at doc[from], skipping quoted scalars.
func flowEnd(doc []byte, from int) (int, error) {
	depth := 0
	for i := from; i < len(doc); i++ {
		switch c := doc[i]; c {
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth == 0 {
				return i + 1, nil
			}
		case '"', '\'':
			for i++; i < len(doc) && doc[i] != c; i++ {
				if c == '"' && doc[i] == '\\' {
					i++
				}
			}
		}
	}
	return 0, errors.New("unterminated flow mapping")
}

// applySplices applies non-overlapping splices, last first so that the
// earlier offsets stay valid.
func applySplices(doc []byte, sp []splice) []byte {
	slices.SortFunc(sp, func(a, b splice) int { return b.from - a.from })
	out := slices.Clone(doc)
	for _, s := range sp {
		text := s.text
		if s.block {
			text = strings.Repeat(" ", s.indent) + text + "\n"
		}
		out = slices.Concat(out[:s.from], []byte(text), out[s.to:])
	}
	return out
}
