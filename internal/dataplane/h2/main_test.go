package h2

import (
	"testing"

	"go.uber.org/goleak"
)

// Every connection goroutine (reader, writer, stream handlers, request body
// copies) must be gone once the servers and clients a test started are
// closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// grpc-go and net/http keep process-wide helpers running.
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	)
}
