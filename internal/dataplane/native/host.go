//go:build native

package native

import (
	"sync"

	"github.com/ebitengine/purego"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// The host callbacks are C function pointers made by purego.NewCallback,
// which the process can make only a bounded number of and never frees; so
// there is one set per process, and they find the stream of a call through
// the process-wide handle table below. This is the one piece of
// package-level state here, forced by that purego limit.
var (
	callbacksOnce sync.Once
	host          hostAPI // what every instance's init gets a pointer to
	streams       = &handleTable{}
)

func hostCallbacks() *hostAPI {
	callbacksOnce.Do(func() {
		host = hostAPI{
			abiVersion:        1,
			getHeader:         purego.NewCallback(hostGetHeader),
			setHeader:         purego.NewCallback(hostSetHeader),
			removeHeader:      purego.NewCallback(hostRemoveHeader),
			sendLocalResponse: purego.NewCallback(hostSendLocalResponse),
		}
	})
	return &host
}

// activeCall is a stream inside a native call, and the headers it exposes.
type activeCall struct {
	s *filter.Stream
	h *message.Headers
}

// handleTable maps the uint64 stream handles C sees to active calls. Slot
// i has handle i+1 (0 is never valid); freed slots are reused.
type handleTable struct {
	mu    sync.Mutex
	calls []activeCall
	free  []uint64
}

func (t *handleTable) add(s *filter.Stream, h *message.Headers) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := len(t.free); n > 0 {
		id := t.free[n-1]
		t.free = t.free[:n-1]
		t.calls[id-1] = activeCall{s: s, h: h}
		return id
	}
	t.calls = append(t.calls, activeCall{s: s, h: h})
	return uint64(len(t.calls))
}

func (t *handleTable) remove(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls[id-1] = activeCall{}
	t.free = append(t.free, id)
}

func (t *handleTable) get(id uint64) (activeCall, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if id == 0 || id > uint64(len(t.calls)) || t.calls[id-1].s == nil {
		return activeCall{}, false
	}
	return t.calls[id-1], true
}

func hostGetHeader(stream uint64, name *byte, nameLen uintptr, buf *byte, capacity uintptr) int64 {
	c, ok := streams.get(stream)
	if !ok {
		return -1
	}
	v, ok := c.h.Get(string(bytesAt(name, nameLen)))
	if !ok {
		return -1
	}
	copy(bytesAt(buf, capacity), v)
	return int64(len(v))
}

func hostSetHeader(stream uint64, name *byte, nameLen uintptr, value *byte, valueLen uintptr) {
	if c, ok := streams.get(stream); ok {
		c.h.SetBytes(string(bytesAt(name, nameLen)), bytesAt(value, valueLen))
	}
}

func hostRemoveHeader(stream uint64, name *byte, nameLen uintptr) {
	if c, ok := streams.get(stream); ok {
		c.h.Del(string(bytesAt(name, nameLen)))
	}
}

func hostSendLocalResponse(stream uint64, status uint32, body *byte, bodyLen uintptr) {
	if c, ok := streams.get(stream); ok {
		c.s.Reply(int(status), string(bytesAt(body, bodyLen)))
	}
}
