//go:build !native

package native

import (
	"log/slog"

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
)

// Available reports whether this build can load native plugins.
const Available = false

// NewRuntime returns nil: this build has no native runtime (build with
// -tags native).
func NewRuntime(*slog.Logger) extension.Runtime { return nil }
