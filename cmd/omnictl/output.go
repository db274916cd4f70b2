package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/goccy/go-yaml"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// printMessage writes m as JSON or YAML (with the proto field names, as the
// HTTP gateway does), or calls table for -o table.
func (c *cli) printMessage(m proto.Message, table func(w io.Writer)) error {
	switch c.output {
	case "json", "yaml":
		raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		if err != nil {
			return fmt.Errorf("encoding the answer: %w", err)
		}
		// protojson varies its whitespace on purpose (its output is not
		// meant to be stable); re-indent so that scripts and diffs see
		// the same text for the same answer.
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return fmt.Errorf("encoding the answer: %w", err)
		}
		b := buf.Bytes()
		if c.output == "yaml" {
			if b, err = yaml.JSONToYAML(b); err != nil {
				return fmt.Errorf("encoding the answer as YAML: %w", err)
			}
		}
		_, err = c.out.Write(append(b, '\n'))
		return err
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

func row(w io.Writer, cols ...string) {
	fmt.Fprintln(w, strings.Join(cols, "\t"))
}

// shortType keeps the last segment of a type URL:
// type.googleapis.com/envoy.config.cluster.v3.Cluster → Cluster.
func shortType(typeURL string) string {
	if i := strings.LastIndexByte(typeURL, '.'); i >= 0 {
		return typeURL[i+1:]
	}
	return typeURL
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
