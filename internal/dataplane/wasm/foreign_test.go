package wasm

import (
	"context"
	"testing"
	"time"
)

// rawModule is a Proxy-Wasm module written without any SDK, in the shape
// other toolchains (C, Rust, AssemblyScript) produce: ABI 0.2.0, a malloc
// allocator, no WASI, and an on_request_headers that calls
// proxy_add_header_map_value(request headers, "x-raw", "yes") from data in
// its own memory.
func rawModule() []byte {
	b := []byte("\x00asm\x01\x00\x00\x00")
	b = section(b, 1, []byte{5,
		0x60, 0, 0, // t0 () -> ()
		0x60, 1, 0x7f, 1, 0x7f, // t1 (i32) -> i32
		0x60, 2, 0x7f, 0x7f, 0, // t2 (i32, i32) -> ()
		0x60, 3, 0x7f, 0x7f, 0x7f, 1, 0x7f, // t3 (i32, i32, i32) -> i32
		0x60, 5, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 1, 0x7f, // t4 (i32 x5) -> i32
	})
	b = section(b, 2, append(name(name([]byte{1}, "env"), "proxy_add_header_map_value"), 0, 4))
	b = section(b, 3, []byte{4, 0, 1, 2, 3})
	b = section(b, 5, []byte{1, 0, 1})
	exp := []byte{5}
	exp = append(name(exp, exportABI020), 0, 1)
	exp = append(name(exp, "malloc"), 0, 2)
	exp = append(name(exp, "proxy_on_context_create"), 0, 3)
	exp = append(name(exp, "proxy_on_request_headers"), 0, 4)
	exp = append(name(exp, "memory"), 2, 0)
	b = section(b, 7, exp)
	fn := func(body ...byte) []byte { return append([]byte{byte(len(body) + 1), 0}, body...) }
	code := []byte{4}
	code = append(code, fn(0x0b)...)
	code = append(code, fn(0x41, 0x80, 0x08, 0x0b)...) // malloc: always 1024
	code = append(code, fn(0x0b)...)
	code = append(code, fn(
		0x41, 0x00, 0x41, 0x10, 0x41, 0x05, 0x41, 0x16, 0x41, 0x03, // map 0, key@16 len 5, value@22 len 3
		0x10, 0x00, 0x1a, // call add_header; drop status
		0x41, 0x00, 0x0b)...) // Continue
	b = section(b, 10, code)
	data := append([]byte{1, 0, 0x41, 0x10, 0x0b, 9}, "x-raw\x00yes"...)
	return section(b, 11, data)
}

func TestForeignModule(t *testing.T) {
	r := newRuntime(t, Options{})
	p, err := r.LoadModule(context.Background(), "raw", rawModule(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.ABI() != ABI020 {
		t.Errorf("ABI = %s", p.ABI())
	}
	s := newStream("/")
	act, err := p.OnRequest(context.Background(), s)
	if err != nil || act != Continue {
		t.Fatalf("OnRequest = %v, %v", act, err)
	}
	p.OnComplete(s)
	if got := s.Req.Header.GetString("x-raw"); got != "yes" {
		t.Errorf("x-raw = %q", got)
	}
}

// TestForeignFunctions: compress and uncompress (zlib), an unknown name (NotFound), and declare_property with readonly: the
// property takes its first value and refuses a second.
func TestForeignFunctions(t *testing.T) {
	r := newRuntime(t, Options{})
	p := load(t, r, guestTest, "features")
	s := newStream("/foreign")
	if _, err := p.OnRequest(withDeadline(t, 5*time.Second), s); err != nil {
		t.Fatal(err)
	}
	p.OnComplete(s)
	for k, want := range map[string]string{
		// Envoy's zlib gives 789ccb48cdc9c95728cf2fca495104001e89047e (the
		// SDK example's README); Go's deflate ends with an empty stored
		// block instead: the same data, other bytes (docs/wasm.md).
		"x-compress":   "789cca48cdc9c95728cf2fca495104040000ffff1e89047e",
		"x-uncompress": "hello world!ok",
		"x-unknown":    "proxy-wasm: not found",
		"x-declare":    "ok",
		"x-prop":       "one ok proxy-wasm: bad argument",
	} {
		if got := s.Req.Header.GetString(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

func TestParseDeclareProperty(t *testing.T) {
	name, ro, err := parseDeclareProperty(append([]byte{0x0a, 7}, "my.prop\x10\x01\x18\x02\x22\x01x\x28\x03"...))
	if err != nil || name != "my.prop" || !ro {
		t.Fatalf("= %q %v %v", name, ro, err)
	}
	for _, bad := range [][]byte{nil, {0x0a, 9, 'x'}, {0x10, 1}, {0xff}} {
		if _, _, err := parseDeclareProperty(bad); err == nil {
			t.Errorf("%x: no error", bad)
		}
	}
}

func FuzzParseDeclareProperty(f *testing.F) {
	f.Add(append([]byte{0x0a, 7}, "my.prop\x10\x01"...))
	f.Add([]byte{0x0a, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		name, _, err := parseDeclareProperty(b)
		if err == nil && name == "" {
			t.Fatal("no error for an empty name")
		}
	})
}
