package testutil

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAddrDistinctAndFree(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		a := Addr(t)
		if seen[a] {
			t.Fatalf("Addr returned %s twice", a)
		}
		seen[a] = true
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("Addr %s is not free: %v", a, err)
		}
		_ = ln.Close()
	}
}

// recorder is a testing.TB whose Fatalf records the message and stops the
// calling goroutine, as the real one does.
type recorder struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.msg = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	panic(r)
}

func TestEventuallyTimeoutSaysWhatItLastSaw(t *testing.T) {
	r := &recorder{TB: t}
	n := 0
	func() {
		defer func() {
			if p := recover(); p != nil && p != r {
				panic(p)
			}
		}()
		Eventually(r, 50*time.Millisecond, 5*time.Millisecond, "the thing", func() (bool, string) {
			n++
			return false, "attempt " + strings.Repeat("x", n%3)
		})
	}()
	if r.msg == "" || !strings.Contains(r.msg, "the thing") || !strings.Contains(r.msg, "attempt") {
		t.Fatalf("timeout message %q does not name what and the last detail", r.msg)
	}
	if n < 2 {
		t.Fatalf("cond called %d times in 50ms at a 5ms poll", n)
	}
}

func TestEventuallyReturnsOnceTrue(t *testing.T) {
	n := 0
	Eventually(t, 5*time.Second, time.Millisecond, "third call", func() (bool, string) {
		n++
		return n == 3, ""
	})
	if n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
}

func TestBackendAnswersItsName(t *testing.T) {
	b := StartBackend(t, "alpha", nil)
	resp, body := Get(t, nil, "http://"+b.Addr+"/x")
	if body != "alpha" || resp.Header.Get("x-backend") != "alpha" {
		t.Fatalf("got %q, x-backend %q", body, resp.Header.Get("x-backend"))
	}
	if code, body := Fetch("http://" + b.Addr + "/healthz"); code != 200 || body != "ok" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if got := b.Hits.Load(); got != 1 {
		t.Fatalf("hits %d, want 1 (/healthz is not counted)", got)
	}
	resp, _ = Get(t, H2CClient(), "http://"+b.Addr+"/")
	if resp.ProtoMajor != 2 {
		t.Fatalf("h2c: proto %s", resp.Proto)
	}
}
