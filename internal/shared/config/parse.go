package config

import (
	"fmt"
	"os"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// ParseOption changes how Parse and Load check a config.
type ParseOption func(*parseOptions)

type parseOptions struct {
	skipFileChecks bool
	meshKit        bool // ServedByMeshKit (rollout.go)
}

// SkipFileChecks validates everything except that the certificate and key
// files a config names exist and load. The control plane uses it: those
// files live on the proxies, not where the config is applied.
func SkipFileChecks() ParseOption {
	return func(o *parseOptions) { o.skipFileChecks = true }
}

// Load reads and parses the config file at path.
func Load(path string, opts ...ParseOption) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	return Parse(path, data, opts...)
}

// Parse decodes data strictly (unknown fields and duplicate keys are errors)
// and validates it. filename is used in error messages and as the base of
// relative file paths in the config. Every error is an *Error; several are
// joined with errors.Join.
func Parse(filename string, data []byte, opts ...ParseOption) (*Config, error) {
	var o parseOptions
	for _, opt := range opts {
		opt(&o)
	}
	src := newSource(filename, o)
	c, err := decode(src, data)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func decode(src *source, data []byte) (c *Config, err error) {
	// The YAML library is third-party code fed with untrusted bytes; a panic
	// in it must become an error, never take the process down.
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, &Error{File: src.file, Reason: fmt.Sprintf("malformed YAML (parser failure: %v)", r)}
		}
	}()
	file, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, joinErrors([]*Error{src.decodeError(err)})
	}
	var body ast.Node
	docs := 0
	for _, d := range file.Docs {
		if d == nil || d.Body == nil {
			continue
		}
		docs++
		if docs > 1 {
			return nil, joinErrors([]*Error{src.decodeError(errAt(d.Body, "a config file holds one YAML document; found another"))})
		}
		body = d.Body
	}
	if body == nil {
		return nil, &Error{File: src.file, Reason: "config is empty"}
	}
	if _, ok := mappingValues(unwrapNode(body)); !ok {
		return nil, joinErrors([]*Error{src.decodeError(errAt(body, "expected a mapping at the top of the document, got %s", describe(body)))})
	}
	fixFlowScalars(body, 0)
	src.index(body, "", 0)
	c = &Config{src: src}
	if err := yaml.NodeToValue(body, c, yaml.DisallowUnknownField()); err != nil {
		return nil, joinErrors([]*Error{src.decodeError(err)})
	}
	return c, nil
}
