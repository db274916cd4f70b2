//go:build native

package native

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
	"unsafe"

	"github.com/ebitengine/purego"

	"github.com/omnirelay/omnirelay/internal/dataplane/extension"
	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
)

// Available reports whether this build can load native plugins.
const Available = true

// Return codes of the plugin's header calls (omnirelay_native.h).
const (
	rcContinue = 0
	rcStop     = 1
)

// maxIdle bounds the idle instances a plugin keeps; more are destroyed.
const maxIdle = 64

// Runtime loads native plugins. It is safe for concurrent use.
type Runtime struct {
	log *slog.Logger
}

var (
	_ extension.Runtime   = (*Runtime)(nil)
	_ extension.Describer = (*plugin)(nil)
)

// NewRuntime returns the native runtime.
func NewRuntime(log *slog.Logger) extension.Runtime {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runtime{log: log}
}

// Kind implements extension.Runtime.
func (*Runtime) Kind() string { return extpkg.KindNative }

// ABIs implements extension.Runtime.
func (*Runtime) ABIs() []string { return []string{ABI} }

// hostAPI mirrors omnirelay_host_api. C keeps the pointer init was given,
// so the one value lives in a package variable (host.go): never moved,
// never freed.
type hostAPI struct {
	abiVersion        uint32
	reserved          uint32
	getHeader         uintptr
	setHeader         uintptr
	removeHeader      uintptr
	sendLocalResponse uintptr
}

// plugin is one dlopen'ed shared object with its config and instances.
type plugin struct {
	name   string
	lib    uintptr
	host   *hostAPI
	config []byte // pinned during init calls only; C copies what it keeps

	abi     func() uint32
	init    func(host *hostAPI, config *byte, n uintptr) uintptr
	destroy func(inst uintptr)
	// The per-request calls go through SyscallN: RegisterFunc's reflective
	// wrappers cost about a dozen allocations a call.
	onRequest, onResponse uintptr

	mu     sync.Mutex
	idle   []uintptr
	closed bool
	log    *slog.Logger

	// states recycles the per-stream streamInst (one allocation a request
	// otherwise).
	states sync.Pool
}

// Load implements extension.Runtime: the payload is written to a private
// temporary file for dlopen (which needs a path) and removed once mapped;
// every Load gets its own copy of the library, so a reload starts from
// fresh global state.
func (r *Runtime) Load(_ context.Context, m extpkg.Manifest, payload, config []byte) (extension.Plugin, error) {
	f, err := os.CreateTemp("", "omnirelay-native-*.so")
	if err != nil {
		return nil, fmt.Errorf("native: stage shared object: %w", err)
	}
	path := f.Name()
	defer os.Remove(path)
	if _, err := f.Write(payload); err != nil {
		f.Close()
		return nil, fmt.Errorf("native: stage shared object: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("native: stage shared object: %w", err)
	}
	lib, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, fmt.Errorf("native: dlopen: %w", err)
	}
	p := &plugin{name: m.Name, lib: lib, config: append([]byte(nil), config...), log: r.log}
	for _, s := range []struct {
		name string
		fn   any
	}{
		{"omnirelay_native_abi", &p.abi},
		{"omnirelay_init", &p.init},
		{"omnirelay_on_request_headers", &p.onRequest},
		{"omnirelay_on_response_headers", &p.onResponse},
		{"omnirelay_destroy", &p.destroy},
	} {
		sym, err := purego.Dlsym(lib, s.name)
		if err != nil {
			_ = purego.Dlclose(lib)
			return nil, fmt.Errorf("native: the shared object does not export %s (see omnirelay_native.h): %w", s.name, err)
		}
		if ptr, ok := s.fn.(*uintptr); ok {
			*ptr = sym
			continue
		}
		purego.RegisterFunc(s.fn, sym)
	}
	if v := p.abi(); v != 1 {
		_ = purego.Dlclose(lib)
		return nil, fmt.Errorf("native: the shared object was built for native ABI %d, this proxy implements 1", v)
	}
	p.host = hostCallbacks()
	// One instance up front: a config the plugin refuses fails the load.
	inst, err := p.newInstance()
	if err != nil {
		_ = purego.Dlclose(lib)
		return nil, err
	}
	p.idle = append(p.idle, inst)
	return p, nil
}

func (p *plugin) newInstance() (uintptr, error) {
	var cfg *byte
	if len(p.config) > 0 {
		cfg = &p.config[0]
	}
	inst := p.init(p.host, cfg, uintptr(len(p.config)))
	if inst == 0 {
		return 0, fmt.Errorf("native: omnirelay_init refused the config %q", p.config)
	}
	return inst, nil
}

// take returns an idle instance or makes one.
func (p *plugin) take() (uintptr, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return 0, errors.New("native: plugin closed")
	}
	if n := len(p.idle); n > 0 {
		inst := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return inst, nil
	}
	p.mu.Unlock()
	return p.newInstance()
}

// put returns an instance to the pool, or destroys it.
func (p *plugin) put(inst uintptr) {
	p.mu.Lock()
	if !p.closed && len(p.idle) < maxIdle {
		p.idle = append(p.idle, inst)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	p.destroy(inst)
}

// streamInst is what a stream keeps in its extension.StreamState slot.
type streamInst struct {
	inst        uintptr
	quarantined bool
	// args is SyscallN's argument list: passed as args[:]..., it costs no
	// allocation, where a literal argument list escapes to the heap on
	// every call.
	args [2]uintptr
}

// newStreamInst returns a recycled streamInst for inst.
func (p *plugin) newStreamInst(inst uintptr) *streamInst {
	si, _ := p.states.Get().(*streamInst)
	if si == nil {
		si = new(streamInst)
	}
	*si = streamInst{inst: inst}
	return si
}

func (p *plugin) OnRequest(ctx context.Context, s *filter.Stream) (extension.Action, error) {
	slot := extension.StreamState(s)
	inst, err := p.take()
	if err != nil {
		return extension.Continue, err
	}
	si := p.newStreamInst(inst)
	*slot = si
	rc, err := p.call(ctx, si, p.onRequest, s, &s.Req.Header)
	if err != nil {
		return extension.Continue, err
	}
	if rc == rcStop {
		return extension.Stop, nil
	}
	return extension.Continue, nil
}

func (p *plugin) OnResponse(ctx context.Context, s *filter.Stream) error {
	si, _ := (*extension.StreamState(s)).(*streamInst)
	if si == nil || si.quarantined || s.Resp == nil {
		return nil
	}
	_, err := p.call(ctx, si, p.onResponse, s, &s.Resp.Header)
	return err
}

// Describe implements extension.Describer: a native plugin may act in both
// phases and keeps its deadline: call checks the deadline after every
// native call (and so after any instance start in take that preceded it),
// which is the last thing OnRequest and OnResponse do.
func (p *plugin) Describe() extension.Capabilities {
	return extension.Capabilities{Phases: extension.AllPhases, KeepsDeadline: true}
}

// call runs one header call with the stream registered for the host
// callbacks. A call that returns past its deadline quarantines the
// instance: native code cannot be interrupted, and an instance that
// overran once (a loop, a lock, a slow dependency) is not trusted again.
func (p *plugin) call(ctx context.Context, si *streamInst, fn uintptr, s *filter.Stream, h *message.Headers) (int32, error) {
	id := streams.add(s, h)
	si.args = [2]uintptr{si.inst, uintptr(id)}
	r1, _, _ := purego.SyscallN(fn, si.args[:]...)
	streams.remove(id)
	rc := int32(r1)                                         // C returns int32_t in the low half of the register
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 0 { // monotonic only: half the cost of time.Now
		si.quarantined = true
		return 0, fmt.Errorf("native call returned after its deadline (%w); instance quarantined", context.DeadlineExceeded)
	}
	switch rc {
	case rcContinue, rcStop:
		return rc, nil
	}
	return 0, fmt.Errorf("native plugin returned %d", rc)
}

func (p *plugin) OnComplete(s *filter.Stream) {
	slot := extension.StreamState(s)
	si, _ := (*slot).(*streamInst)
	if si == nil {
		return
	}
	*slot = nil
	inst, quarantined := si.inst, si.quarantined
	p.states.Put(si)
	if quarantined {
		p.destroy(inst)
		p.log.Warn("native extension instance quarantined after a call past its deadline", "extension", p.name)
		return
	}
	p.put(inst)
}

// Close destroys the idle instances and unloads the library. The extension
// filter calls it once no stream uses the plugin.
func (p *plugin) Close() error {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, inst := range idle {
		p.destroy(inst)
	}
	if err := purego.Dlclose(p.lib); err != nil {
		return fmt.Errorf("native: dlclose %s: %w", p.name, err)
	}
	return nil
}

// bytesAt views n bytes of C memory at ptr, for the length of a callback.
func bytesAt(ptr *byte, n uintptr) []byte {
	if ptr == nil || n == 0 {
		return nil
	}
	return unsafe.Slice(ptr, n)
}
