package wasm

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// spinModule hand-assembles a module whose export "spin" loops forever,
// with optional imported globals (which shift the global index space) and
// a memory.
func spinModule(importedGlobals int, memory bool) []byte {
	b := []byte("\x00asm\x01\x00\x00\x00")
	b = section(b, 1, []byte{1, 0x60, 0, 0})
	if importedGlobals > 0 {
		imp := uleb(nil, importedGlobals)
		for i := range importedGlobals {
			imp = name(name(imp, "env"), "g"+string(rune('a'+i)))
			imp = append(imp, 0x03, 0x7f, 0x00) // const i32
		}
		b = section(b, 2, imp)
	}
	b = section(b, 3, []byte{1, 0})
	if memory {
		b = section(b, 5, []byte{1, 0, 1})
	}
	b = section(b, 7, append(name([]byte{1}, "spin"), 0, 0))
	// loop; br 0; end; end
	return section(b, 10, []byte{1, 7, 0, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b})
}

func TestInstrument(t *testing.T) {
	raw := rawModule()
	tests := []struct {
		name    string
		module  []byte
		run     bool   // call spin and interrupt it
		wantErr string // instrument fails
	}{
		{name: "loop with a memory", module: spinModule(0, true), run: true},
		{name: "loop without a memory", module: spinModule(0, false)},
		{name: "imported globals", module: spinModule(2, true)},
		{name: "module of another toolchain", module: raw},
		{name: "not wasm", module: []byte("\x7fELF\x02\x01\x01\x00"), wantErr: "not a WebAssembly binary"},
		{name: "version 2", module: []byte("\x00asm\x02\x00\x00\x00"), wantErr: "unsupported binary version"},
		{name: "truncated", module: raw[:len(raw)-3], wantErr: "truncated"},
		{name: "unknown opcode", module: section([]byte("\x00asm\x01\x00\x00\x00"), 10, []byte{1, 3, 0, 0xf0, 0x0b}), wantErr: "unknown opcode 0xf0"},
		{name: "start section", module: startSpinModule()},
		{name: "reserved export", module: section([]byte("\x00asm\x01\x00\x00\x00"), 7, append(name([]byte{1}, interruptExport), 3, 0)), wantErr: "reserves"},
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	t.Cleanup(func() { rt.Close(ctx) })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := instrument(tt.module)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("instrument: error %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// wazero validates every function: the checks must type-check,
			// name a mutable i32 global, and leave branch depths alone.
			cm, err := rt.CompileModule(ctx, out)
			if err != nil {
				t.Fatalf("instrumented module does not compile: %v", err)
			}
			defer cm.Close(ctx)
			if !tt.run {
				return
			}
			mod, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName(""))
			if err != nil {
				t.Fatal(err)
			}
			defer mod.Close(ctx)
			stop, ok := mod.ExportedGlobal(interruptExport).(api.MutableGlobal)
			if !ok {
				t.Fatal("no mutable interrupt global exported")
			}
			time.AfterFunc(20*time.Millisecond, func() { stop.Set(1) })
			_, err = mod.ExportedFunction("spin").Call(ctx)
			if err == nil || !strings.Contains(err.Error(), "unreachable") {
				t.Fatalf("spin returned %v, want an unreachable trap", err)
			}
		})
	}
}

// startSpinModule is a Proxy-Wasm module (ABI export, allocator, memory)
// whose start section loops forever.
func startSpinModule() []byte {
	b := []byte("\x00asm\x01\x00\x00\x00")
	b = section(b, 1, []byte{2, 0x60, 0, 0, 0x60, 1, 0x7f, 1, 0x7f})
	b = section(b, 3, []byte{3, 0, 1, 0})
	b = section(b, 5, []byte{1, 0, 1})
	exp := []byte{3}
	exp = append(name(exp, exportABI021), 0, 2)
	exp = append(name(exp, "proxy_on_memory_allocate"), 0, 1)
	exp = append(name(exp, "memory"), 2, 0)
	b = section(b, 7, exp)
	b = section(b, 8, []byte{0})
	return section(b, 10, []byte{3,
		7, 0, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // spin
		5, 0, 0x41, 0x80, 0x08, 0x0b, // alloc: 1024
		2, 0, 0x0b})
}

// TestStartSectionUnderWatchdog: a start section that never ends fails the
// load at its deadline instead of hanging it (wazero would run it inside
// InstantiateModule, where the watchdog cannot reach).
func TestStartSectionUnderWatchdog(t *testing.T) {
	r := newRuntime(t, Options{})
	start := time.Now()
	_, err := r.LoadModule(withDeadline(t, 50*time.Millisecond), "spin", startSpinModule(), nil)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "start function") {
		t.Fatalf("LoadModule: %v, want the start function interrupted at the deadline", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("took %v", took)
	}
}

// TestInterruptUnderGC: a guest spinning in machine code while the
// collector wants to stop the world is still interrupted: the check's
// periodic visit to Go lets the scheduler preempt it. Without that visit
// the stop-the-world pause, and the timer behind it, would wait forever.
func TestInterruptUnderGC(t *testing.T) {
	r := newRuntime(t, Options{})
	p := load(t, r, guestTest, "loop")
	done := make(chan struct{})
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		for {
			select {
			case <-done:
				return
			default:
				runtime.GC()
			}
		}
	}()
	defer func() { close(done); <-gcDone }()
	for range 3 {
		// Each request gets an instance that is ready, so that the
		// deadline is spent in the guest, not waiting for a spare.
		for wait := time.Now().Add(10 * time.Second); idle(p) == 0; time.Sleep(time.Millisecond) {
			if time.Now().After(wait) {
				t.Fatal("no idle instance after 10s")
			}
		}
		s := newStream("/")
		start := time.Now()
		_, err := p.OnRequest(withDeadline(t, 30*time.Millisecond), s)
		p.OnComplete(s)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("OnRequest: %v, want a deadline error", err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("interrupted after %v, deadline 30ms", took)
		}
	}
}

// TestLateInterruptDoesNotStopNextCall: a timer that fires after its call
// returned must leave the next call alone.
func TestLateInterruptDoesNotStopNextCall(t *testing.T) {
	r := newRuntime(t, Options{})
	p := load(t, r, guestAdd, "x-added: yes")
	for range 50 {
		// Deadlines short enough that some timers are still on their way
		// when the call ends, long enough that the call itself succeeds.
		s := newStream("/")
		if _, err := p.OnRequest(withDeadline(t, 200*time.Millisecond), s); err != nil {
			t.Fatal(err)
		}
		p.OnComplete(s)
		if v, _ := s.Req.Header.Get("x-added"); string(v) != "yes" {
			t.Fatalf("x-added = %q", v)
		}
	}
}

// FuzzInstrument: whatever the bytes, instrument does not panic; and a
// module wazero compiles is instrumented, still compiles, and is refused a
// second instrumentation (the export name is reserved).
func FuzzInstrument(f *testing.F) {
	f.Add(spinModule(0, true))
	f.Add(spinModule(1, false))
	f.Add(rawModule())
	f.Add(startSpinModule())
	f.Add(tinyModule([]string{"proxy_log"}, []string{"proxy_on_context_create", "malloc"}))
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := instrument(b)
		if !plausibleCounts(b) {
			return // wazero would try to allocate what the counts claim
		}
		// A runtime per input: with one shared by every input, the fuzzing
		// process died after tens of thousands of inputs (three runs; the
		// saved input then passed on its own).
		rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
		defer rt.Close(ctx)
		cm, cerr := rt.CompileModule(ctx, b)
		if cerr != nil {
			return
		}
		cm.Close(ctx)
		if err != nil {
			t.Fatalf("wazero compiles it, instrument refuses it: %v", err)
		}
		if cm, err = rt.CompileModule(ctx, out); err != nil {
			t.Fatalf("compiles, but not once instrumented: %v", err)
		}
		cm.Close(ctx)
		if _, err := instrument(out); err == nil {
			t.Fatal("an instrumented module was instrumented again")
		}
	})
}

// plausibleCounts reports whether every section that is a vector declares
// no more entries than it has bytes, and no function declares more than
// 1000 locals: wazero's decoder allocates what a count claims before it
// finds the bytes missing, and a fuzzed count of 2^31 kills the fuzzing
// process (a wazero limit, not the rewriter's).
func plausibleCounts(b []byte) bool {
	if len(b) < 8 {
		return true
	}
	r := reader{b: b, off: 8}
	for !r.done() {
		id := r.byte()
		body := r.take(r.u32())
		if r.err != nil {
			return true // wazero refuses it before allocating
		}
		if id == secCustom || id == secStart || id == 12 {
			continue
		}
		br := reader{b: body}
		n := br.u32()
		if br.err != nil || int(n) > len(body) {
			return false
		}
		if id != secCode {
			continue
		}
		for i := uint32(0); i < n && br.err == nil; i++ {
			fn := reader{b: br.take(br.u32())}
			groups := fn.u32()
			total := uint64(0)
			for g := uint32(0); g < groups && fn.err == nil && g < 1000; g++ {
				total += uint64(fn.u32())
				fn.byte()
			}
			if groups > 1000 || total > 1000 {
				return false
			}
		}
	}
	return true
}

const guestNoop = "internal/dataplane/wasm/testdata/noop"

// BenchmarkGuestCall prices one call of an empty export of a Go-built
// guest three ways: with no way to interrupt it, under wazero's
// WithCloseOnContextDone, and instrumented under the instance watchdog
// (what the host does).
func BenchmarkGuestCall(b *testing.B) {
	bin := guest(b, guestNoop)
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	raw := func(b *testing.B, closeOnDone bool) {
		rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler().WithCloseOnContextDone(closeOnDone))
		defer rt.Close(ctx)
		wasi_snapshot_preview1.MustInstantiate(ctx, rt)
		if err := instantiateHost(ctx, rt); err != nil {
			b.Fatal(err)
		}
		mod, err := rt.InstantiateWithConfig(ctx, bin, wazero.NewModuleConfig().WithName("").WithStartFunctions("_initialize"))
		if err != nil {
			b.Fatal(err)
		}
		fn := mod.ExportedFunction("bench_empty")
		b.ReportAllocs()
		for b.Loop() {
			if err := fn.CallWithStack(ctx, nil); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("uninterruptible", func(b *testing.B) { raw(b, false) })
	b.Run("wazero-close-on-context-done", func(b *testing.B) { raw(b, true) })
	b.Run("instrumented-watchdog", func(b *testing.B) {
		r := newRuntime(b, Options{})
		p := load(b, r, guestNoop, "")
		in, err := p.get(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer p.put(in)
		fn := in.mod.ExportedFunction("bench_empty")
		b.ReportAllocs()
		for b.Loop() {
			if err := in.run(ctx, fn, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestInstrumentKeepsNames: the name section (function names in traps)
// survives, the DWARF sections do not.
func TestInstrumentKeepsNames(t *testing.T) {
	out, err := instrument(guest(t, guestNoop))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out, []byte(".debug_info")) {
		t.Error("DWARF section kept")
	}
	if !bytes.Contains(out, []byte("\x04name")) {
		t.Error("name section dropped")
	}
}
