package http2core

import "testing"

func TestSendWindowConnectionOverflow(t *testing.T) {
	var w SendWindow
	w.Set(DefaultWindow)
	if !w.Grow(MaxWindow - DefaultWindow) {
		t.Fatal("growing to exactly 2^31-1 was refused")
	}
	if w.Grow(1) {
		t.Fatal("2^31 was accepted")
	}
}

func TestRecvWindowTakeAndCredit(t *testing.T) {
	const size = 1000
	var w RecvWindow
	w.Set(size)
	if !w.Take(600) || w.Avail() != 400 {
		t.Fatalf("avail %d after 600 of %d", w.Avail(), size)
	}
	// Batched: nothing returned below the threshold.
	if inc := w.Credit(200, UpdateThreshold(size)); inc != 0 {
		t.Fatalf("increment %d below the threshold", inc)
	}
	if inc := w.Credit(100, UpdateThreshold(size)); inc != 300 {
		t.Fatalf("increment %d, want 300 (all consumed bytes)", inc)
	}
	if w.Avail() != 700 {
		t.Fatalf("avail %d after the update, want 700", w.Avail())
	}
	// The peer may use exactly the window, not a byte more.
	if !w.Take(700) {
		t.Fatal("the whole window was refused")
	}
	if w.Take(1) {
		t.Fatal("a byte past the window was accepted")
	}
}

func TestRecvWindowLimits(t *testing.T) {
	var w RecvWindow
	w.Set(MaxWindow)
	if !w.Take(MaxWindow) || w.Avail() != 0 {
		t.Fatalf("avail %d", w.Avail())
	}
	if inc := w.Credit(MaxWindow, UpdateThreshold(MaxWindow)); inc != MaxWindow || w.Avail() != MaxWindow {
		t.Fatalf("increment %d avail %d", inc, w.Avail())
	}
	// A peer that keeps overrunning a refused window cannot wrap it around.
	w.Set(10)
	for range 1 << 12 {
		w.Take(1 << 20)
	}
	if w.Avail() >= 0 {
		t.Fatalf("avail %d after overruns", w.Avail())
	}
}
