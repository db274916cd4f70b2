package app

import (
	"testing"

	"go.uber.org/goleak"
)

// The proxy, its xDS client and the control planes of the tests must all
// stop when they are shut down.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
