package testutil

import (
	"testing"
	"time"
)

// Eventually calls cond every poll until it reports ok, and fails the test
// if that has not happened within the given time. cond's detail describes
// what it saw (a status, a body, a count); the failure message quotes the
// last one, so a timeout says how far things got rather than only that they
// did not finish.
//
// cond runs on the test's goroutine and may call t.Fatal.
func Eventually(t testing.TB, within, poll time.Duration, what string, cond func() (ok bool, detail string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if !time.Now().Before(deadline) {
			t.Fatalf("%s: not within %v (last seen: %s)", what, within, detail)
		}
		time.Sleep(poll)
	}
}

// Bool adapts a condition without detail to Eventually.
func Bool(cond func() bool) func() (bool, string) {
	return func() (bool, string) {
		if cond() {
			return true, ""
		}
		return false, "condition false"
	}
}
