// Package examples embeds the example configs shipped with OmniRelay so that
// `omnirelay demo` runs without files on disk and tests load every example.
package examples

import "embed"

// FS holds every *.yaml example in this directory.
//
//go:embed *.yaml
var FS embed.FS
