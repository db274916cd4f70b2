package h2

import (
	"net"
	"os"
	"os/exec"
	"regexp"
	"testing"
	"time"
)

// TestH2Spec runs h2spec (RFC 7540/9113 and HPACK conformance) against the
// Server over h2c. It needs the h2spec binary: build it with
//
//	cd tools/h2spec && go build -o /tmp/h2spec github.com/summerwind/h2spec/cmd/h2spec
//
// and point H2SPEC at it (default /tmp/h2spec); it is skipped otherwise.
func TestH2Spec(t *testing.T) {
	bin := os.Getenv("H2SPEC")
	if bin == "" {
		bin = "/tmp/h2spec"
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("h2spec not found at %s", bin)
	}
	addr := startServer(t, &Server{MaxConcurrentStreams: 100}, testHandler)
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "-h", host, "-p", port, "-o", "5")
	cmd.WaitDelay = time.Second
	out, _ := cmd.CombinedOutput()
	m := regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no h2spec summary in output:\n%s", out)
	}
	t.Logf("h2spec: %s", m[0])
	if string(m[4]) != "0" {
		t.Fatalf("h2spec failures:\n%s", out)
	}
}
