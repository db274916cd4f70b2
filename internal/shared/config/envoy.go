package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/parser"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/omnirelay/omnirelay/internal/shared/resources"
)

// The Any payloads of a bootstrap (filters, transport sockets, access logs)
// resolve through the global proto registry; package resources links in the
// types OmniRelay supports (resources/types.go), so they need no imports here.

// IsEnvoyFormat reports whether data looks like an Envoy bootstrap (YAML or
// JSON with a top-level static_resources key) rather than an omnirelay.v1
// config. Unparseable input is not Envoy format: the omnirelay.v1 parser
// then reports the syntax error.
func IsEnvoyFormat(data []byte) (envoy bool) {
	defer func() {
		if recover() != nil {
			envoy = false
		}
	}()
	file, err := parser.ParseBytes(data, 0)
	if err != nil {
		return false
	}
	for _, d := range file.Docs {
		if d == nil || d.Body == nil {
			continue
		}
		values, ok := mappingValues(unwrapNode(d.Body))
		if !ok {
			return false
		}
		for _, mv := range values {
			if mv.Key == nil || mv.Key.GetToken() == nil {
				continue
			}
			if k := mv.Key.GetToken().Value; k == "static_resources" || k == "staticResources" {
				return true
			}
		}
		return false
	}
	return false
}

// LoadEnvoy reads an Envoy v3 bootstrap (YAML or JSON): its
// static_resources (listeners, clusters, secrets) become the snapshot, and
// admin.address.socket_address the admin address. Other bootstrap fields are
// read and ignored, except dynamic_resources, which a static config cannot
// honour and is rejected. The snapshot has passed Snapshot.Validate.
// filename is used in error messages.
func LoadEnvoy(filename string, data []byte) (*resources.Snapshot, AdminConfig, error) {
	jsonData := data
	isJSON := bytes.HasPrefix(bytes.TrimSpace(data), []byte("{"))
	if !isJSON {
		var err error
		if jsonData, err = yamlToJSON(data); err != nil {
			return nil, AdminConfig{}, fmt.Errorf("%s: %w", filename, err)
		}
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(jsonData, &b); err != nil {
		return nil, AdminConfig{}, fmt.Errorf("%s: %s", filename, protojsonReason(err, isJSON))
	}
	if b.GetDynamicResources() != nil {
		return nil, AdminConfig{}, fmt.Errorf("%s: dynamic_resources is not supported in a static config (connect to the xDS server instead)", filename)
	}
	sr := b.GetStaticResources()
	if sr == nil {
		return nil, AdminConfig{}, fmt.Errorf("%s: static_resources is missing", filename)
	}
	snap := &resources.Snapshot{
		Listeners: sr.GetListeners(),
		Clusters:  sr.GetClusters(),
		Secrets:   sr.GetSecrets(),
	}
	var admin AdminConfig
	if sa := b.GetAdmin().GetAddress().GetSocketAddress(); sa != nil {
		admin.Address = net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
	} else if b.GetAdmin().GetAddress() != nil {
		return nil, AdminConfig{}, fmt.Errorf("%s: admin.address: only socket_address is supported", filename)
	}
	if err := snap.Validate(); err != nil {
		return nil, AdminConfig{}, fmt.Errorf("%s: invalid static_resources:\n%w", filename, err)
	}
	return snap, admin, nil
}

// yamlToJSON converts with the same strictness as Parse (duplicate keys are
// errors) and reports positions in the YAML.
func yamlToJSON(data []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("malformed YAML (parser failure: %v)", r)
		}
	}()
	file, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, fmt.Errorf("%s", yamlErrorText(err))
	}
	docs := 0
	for _, d := range file.Docs {
		if d != nil && d.Body != nil {
			docs++
		}
	}
	switch {
	case docs == 0:
		return nil, fmt.Errorf("bootstrap is empty")
	case docs > 1:
		return nil, fmt.Errorf("a bootstrap holds one YAML document; found %d", docs)
	}
	out, err = yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s", yamlErrorText(err))
	}
	return out, nil
}

func yamlErrorText(err error) string {
	var ye yaml.Error
	if !errors.As(err, &ye) || ye.GetToken() == nil || ye.GetToken().Position == nil {
		return err.Error()
	}
	p := ye.GetToken().Position
	return fmt.Sprintf("%d:%d: %s", p.Line, p.Column, friendlyYAMLMessage(ye))
}

var protojsonPos = regexp.MustCompile(`\(line \d+:\d+\): `)

// protojsonReason makes protojson's message about the user's file: its
// positions refer to the JSON it read, meaningless for YAML input.
func protojsonReason(err error, isJSON bool) string {
	// The protobuf module randomises the space after "proto:" (U+0020 or
	// U+00A0) so that nobody matches its messages; we only strip it.
	msg := strings.TrimLeft(strings.TrimPrefix(err.Error(), "proto:"), " \u00a0")
	if !isJSON {
		msg = protojsonPos.ReplaceAllString(msg, "")
	}
	if strings.Contains(msg, "unable to resolve") {
		msg += " (an extension OmniRelay does not support; see docs/envoy-support.md)"
	}
	return msg
}
