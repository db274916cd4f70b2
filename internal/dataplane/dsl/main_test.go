package dsl_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The proxy test starts a whole OmniRelay; everything it started must be
// gone once the tests end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
