package http2core

// SendWindow is a send-side flow-control window: how many bytes of DATA may
// still be sent on a stream or a connection. It goes negative when the peer
// lowers SETTINGS_INITIAL_WINDOW_SIZE below what is in flight (RFC 9113
// 6.9.2); nothing is sent until WINDOW_UPDATEs bring it back above zero.
type SendWindow struct{ n int64 }

// Set starts the window at n.
func (w *SendWindow) Set(n int64) { w.n = n }

// Avail is what may be sent now (<= 0: nothing).
func (w *SendWindow) Avail() int64 { return w.n }

// Consume charges n sent bytes.
func (w *SendWindow) Consume(n int64) { w.n -= n }

// Grow adds a WINDOW_UPDATE increment or a change of the initial window
// size. It reports false if the window now exceeds MaxWindow: a
// flow-control error (of the stream, or of the connection for the
// connection's window or a SETTINGS change).
func (w *SendWindow) Grow(inc int64) bool {
	w.n += inc
	return w.n <= MaxWindow
}

// RecvWindow is a receive-side flow-control window: what the peer may still
// send, and the bytes consumed but not yet returned to it with
// WINDOW_UPDATE. Windows never exceed MaxWindow, so 32-bit fields hold them:
// the lean xDS transport keeps one per idle connection.
type RecvWindow struct {
	avail   int32
	unacked uint32
}

// Set starts the window at size, with nothing to return.
func (w *RecvWindow) Set(size int64) { w.avail, w.unacked = int32(min(size, MaxWindow)), 0 }

// Avail is what the peer may still send.
func (w *RecvWindow) Avail() int64 { return int64(w.avail) }

// Take charges a received flow-controlled frame of n bytes (its padding
// included). It reports false if the peer sent more than the window
// allowed: a flow-control error, after which the window is not used again.
func (w *RecvWindow) Take(n int64) bool {
	a := max(int64(w.avail)-n, -MaxWindow)
	w.avail = int32(a)
	return a >= 0
}

// Credit records n bytes consumed and returns the WINDOW_UPDATE increment
// to send now, or 0 while fewer than threshold bytes wait: updates are
// batched (UpdateThreshold) so that they stay off the per-frame path.
func (w *RecvWindow) Credit(n, threshold int64) uint32 {
	u := int64(w.unacked) + n
	if u < threshold {
		w.unacked = uint32(u)
		return 0
	}
	w.unacked = 0
	w.avail = int32(min(int64(w.avail)+u, MaxWindow))
	return uint32(u)
}

// UpdateThreshold is the data plane's WINDOW_UPDATE policy for a window of
// size: return consumed bytes once a quarter of the window is waiting.
func UpdateThreshold(size int64) int64 { return size / 4 }
