package wasm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// A guest that loops forever must be stopped at its deadline. wazero can do
// it (WithCloseOnContextDone), but at a price a Go-built guest pays on every
// branch: the compiled code leaves machine code for a Go function at every
// loop header, and the Go toolchain's Wasm output is one big loop per
// function (its jumps go through a loop-header dispatch), so a plain
// add-header request cost ~2.5 µs more that way; wazero also starts a
// goroutine per call to watch the context.
//
// Instead the host rewrites each module at load. It adds two mutable i32
// globals: a countdown, and a stop flag exported as interruptExport. At the
// top of every loop body it puts
//
//	if countdown == 0 {
//		countdown = checkEvery
//		if stop { unreachable }
//		memory.grow 0
//	}
//	countdown--
//
// a few machine instructions per iteration, and a visit to Go every
// checkEvery iterations. That visit (memory.grow exits to wazero's Go code,
// which makes function calls) is what lets the Go scheduler preempt the
// goroutine: a guest spinning in machine code and never leaving it would
// block every stop-the-world pause of the process (the garbage collector's)
// and so the whole proxy. The instance's watchdog (instance.run) sets the
// stop flag from a timer when a call's deadline passes; the guest traps
// within checkEvery iterations and the instance is discarded.
//
// The rewrite is a hand-written pass over the binary format (WebAssembly
// core spec, chapter 5) rather than a library because no Wasm encoder is
// among the project's modules and the pass needs only to walk instructions,
// not to understand them. A module without a memory gets no memory.grow:
// checkModule refuses it anyway.

// interruptExport names the stop flag instrument adds.
const interruptExport = "omnirelay.interrupt"

// startExport names a module's start function, which instrument exports
// in place of the start section: wazero would run that function inside
// InstantiateModule, out of the watchdog's reach; newInstance calls it
// first thing, under the watchdog, which is the same order.
const startExport = "omnirelay.start"

// checkEvery is how many loop iterations pass between two looks at the
// stop flag (and two chances for the scheduler): ~1 µs of a tight loop.
const checkEvery = 1024

// errInstrument reports a module the rewrite cannot walk. wazero refuses
// such modules anyway: the pass knows every instruction wazero compiles.
var errInstrument = errors.New("wasm module")

// Section ids of the binary format.
const (
	secCustom = 0
	secImport = 2
	secMemory = 5
	secGlobal = 6
	secExport = 7
	secStart  = 8
	secCode   = 10
)

// sectionOrder is the order sections must appear in (custom sections may
// appear anywhere); it is where a missing global section is inserted.
var sectionOrder = map[byte]int{1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9, 9: 10, 12: 11, 10: 12, 11: 13}

type wasmSection struct {
	id   byte
	body []byte
}

// imported is what instrument needs to know of a module's imports and
// memory.
type imported struct {
	globals  uint32 // imported globals come first in the global index space
	memory   bool   // the module has a memory (imported or its own)
	memory64 bool   // ... with 64-bit addresses
}

// instrument returns binary with the interrupt globals and checks. It drops
// the DWARF sections (.debug_*): their code offsets no longer match (the
// name section stays: function indices do not change).
func instrument(binary []byte) ([]byte, error) {
	if len(binary) < 8 || string(binary[:4]) != "\x00asm" {
		return nil, fmt.Errorf("%w: not a WebAssembly binary", errInstrument)
	}
	if binary[4] != 1 || binary[5] != 0 || binary[6] != 0 || binary[7] != 0 {
		return nil, fmt.Errorf("%w: unsupported binary version %x", errInstrument, binary[4:8])
	}
	r := reader{b: binary, off: 8}
	var secs []wasmSection
	for !r.done() {
		id := r.byte()
		n := r.u32()
		body := r.take(n)
		if r.err != nil {
			return nil, fmt.Errorf("%w: section %d at offset %d: %w", errInstrument, id, r.off, r.err)
		}
		if id == secCustom && isDWARF(body) {
			continue
		}
		secs = append(secs, wasmSection{id, body})
	}
	info, err := readImports(secs)
	if err != nil {
		return nil, err
	}

	if findSection(secs, secGlobal) < 0 {
		secs = insertSection(secs, wasmSection{id: secGlobal, body: []byte{0}})
	}
	g := findSection(secs, secGlobal)
	gr := reader{b: secs[g].body}
	defined := gr.u32()
	if gr.err != nil {
		return nil, fmt.Errorf("%w: global section: %w", errInstrument, gr.err)
	}
	// Two i32, mutable, initialised by (i32.const 0) end.
	body := binary32(nil, defined+2)
	body = append(body, gr.b[gr.off:]...)
	secs[g].body = append(body, 0x7f, 0x01, 0x41, 0x00, 0x0b, 0x7f, 0x01, 0x41, 0x00, 0x0b)
	countdown, stop := info.globals+defined, info.globals+defined+1

	exports := []export{{interruptExport, 0x03, stop}}
	if k := findSection(secs, secStart); k >= 0 {
		sr := reader{b: secs[k].body}
		fn := sr.u32()
		if sr.err != nil || !sr.done() {
			return nil, fmt.Errorf("%w: malformed start section", errInstrument)
		}
		secs = append(secs[:k], secs[k+1:]...)
		exports = append(exports, export{startExport, 0x00, fn})
	}
	if findSection(secs, secExport) < 0 {
		secs = insertSection(secs, wasmSection{id: secExport, body: []byte{0}})
	}
	if err := addExports(&secs[findSection(secs, secExport)], exports); err != nil {
		return nil, err
	}
	check := loopCheck(countdown, stop, info)
	for i, s := range secs {
		if s.id != secCode {
			continue
		}
		if secs[i].body, err = instrumentCode(s.body, check); err != nil {
			return nil, err
		}
	}
	out := make([]byte, 0, len(binary)+len(binary)/8)
	out = append(out, binary[:8]...)
	for _, s := range secs {
		out = append(out, s.id)
		out = binary32(out, uint32(len(s.body)))
		out = append(out, s.body...)
	}
	return out, nil
}

// loopCheck is the code put at the top of every loop body (see above).
func loopCheck(countdown, stop uint32, info imported) []byte {
	b := []byte{0x23} // global.get countdown
	b = binary32(b, countdown)
	b = append(b, 0x45, 0x04, 0x40, 0x41) // i32.eqz; if; i32.const checkEvery
	b = binary32(b, checkEvery)           // (positive and < 2^13: its s32 and u32 encodings agree)
	b = append(b, 0x24)                   // global.set countdown
	b = binary32(b, countdown)
	b = append(b, 0x23) // global.get stop; if; unreachable; end
	b = binary32(b, stop)
	b = append(b, 0x04, 0x40, 0x00, 0x0b)
	if info.memory {
		zero := byte(0x41) // i32.const 0
		if info.memory64 {
			zero = 0x42 // i64.const 0
		}
		b = append(b, zero, 0x00, 0x40, 0x00, 0x1a) // memory.grow 0; drop
	}
	b = append(b, 0x0b, 0x23) // end; global.get countdown
	b = binary32(b, countdown)
	b = append(b, 0x41, 0x01, 0x6b, 0x24) // i32.const 1; i32.sub; global.set countdown
	return binary32(b, countdown)
}

func isDWARF(body []byte) bool {
	r := reader{b: body}
	name := r.take(r.u32())
	return r.err == nil && strings.HasPrefix(string(name), ".debug_")
}

func findSection(secs []wasmSection, id byte) int {
	for i, s := range secs {
		if s.id == id {
			return i
		}
	}
	return -1
}

func insertSection(secs []wasmSection, s wasmSection) []wasmSection {
	at := len(secs)
	for i, x := range secs {
		if o, ok := sectionOrder[x.id]; ok && o > sectionOrder[s.id] {
			at = i
			break
		}
	}
	return append(secs[:at], append([]wasmSection{s}, secs[at:]...)...)
}

// readImports counts the imported globals and finds the memory.
func readImports(secs []wasmSection) (imported, error) {
	var info imported
	for _, s := range secs {
		switch s.id {
		case secImport:
			r := reader{b: s.body}
			count := r.u32()
			for i := uint32(0); i < count && r.err == nil; i++ {
				r.take(r.u32()) // module
				r.take(r.u32()) // name
				switch kind := r.byte(); kind {
				case 0x00: // function: type index
					r.u32()
				case 0x01: // table: reference type, limits
					r.byte()
					r.limits()
				case 0x02: // memory
					if !info.memory {
						info.memory, info.memory64 = true, r.limits()&4 != 0
					} else {
						r.limits()
					}
				case 0x03: // global: value type, mutability
					r.byte()
					r.byte()
					info.globals++
				case 0x04: // tag: attribute, type index
					r.byte()
					r.u32()
				default:
					r.fail(fmt.Errorf("import %d: unknown kind %#x", i, kind))
				}
			}
			if r.err != nil {
				return info, fmt.Errorf("%w: import section: %w", errInstrument, r.err)
			}
		case secMemory:
			r := reader{b: s.body}
			if n := r.u32(); n > 0 && !info.memory {
				info.memory, info.memory64 = true, r.limits()&4 != 0
			}
			if r.err != nil {
				return info, fmt.Errorf("%w: memory section: %w", errInstrument, r.err)
			}
		}
	}
	return info, nil
}

// export is an entry of the export section: a name, a kind (0x00
// function, 0x03 global) and an index.
type export struct {
	name string
	kind byte
	idx  uint32
}

// addExports appends exports to the export section; a module that already
// uses one of their names is refused.
func addExports(s *wasmSection, add []export) error {
	r := reader{b: s.body}
	count := r.u32()
	entries := r.off
	for j := uint32(0); j < count && r.err == nil; j++ {
		name := string(r.take(r.u32()))
		for _, e := range add {
			if name == e.name {
				return fmt.Errorf("%w: it already exports %q, a name the host reserves", errInstrument, name)
			}
		}
		r.byte()
		r.u32()
	}
	if r.err != nil {
		return fmt.Errorf("%w: export section: %w", errInstrument, r.err)
	}
	body := binary32(nil, count+uint32(len(add)))
	body = append(body, s.body[entries:]...)
	for _, e := range add {
		body = binary32(body, uint32(len(e.name)))
		body = append(body, e.name...)
		body = append(body, e.kind)
		body = binary32(body, e.idx)
	}
	s.body = body
	return nil
}

// instrumentCode rewrites every function body of the code section.
func instrumentCode(code, check []byte) ([]byte, error) {
	r := reader{b: code}
	count := r.u32()
	out := binary32(make([]byte, 0, len(code)+len(code)/4), count)
	var body []byte
	for i := uint32(0); i < count; i++ {
		fn := r.take(r.u32())
		if r.err != nil {
			return nil, fmt.Errorf("%w: code section: function %d: %w", errInstrument, i, r.err)
		}
		var err error
		if body, err = instrumentBody(body[:0], fn, check); err != nil {
			return nil, fmt.Errorf("%w: function %d: %w", errInstrument, i, err)
		}
		out = binary32(out, uint32(len(body)))
		out = append(out, body...)
	}
	if !r.done() || r.err != nil {
		return nil, fmt.Errorf("%w: code section: %d trailing bytes", errInstrument, len(r.b)-r.off)
	}
	return out, nil
}

// instrumentBody copies one function body to dst with check after every
// loop instruction.
func instrumentBody(dst, fn, check []byte) ([]byte, error) {
	r := reader{b: fn}
	groups := r.u32()
	for i := uint32(0); i < groups && r.err == nil; i++ {
		r.u32()
		r.valType()
	}
	copied := 0
	for !r.done() && r.err == nil {
		op := r.byte()
		skipImmediates(&r, op)
		if op == 0x03 && r.err == nil { // loop
			dst = append(dst, fn[copied:r.off]...)
			dst = append(dst, check...)
			copied = r.off
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("offset %d: %w", r.off, r.err)
	}
	return append(dst, fn[copied:]...), nil
}

// skipImmediates reads past the immediates of the instruction op.
func skipImmediates(r *reader, op byte) {
	switch {
	case op == 0x02 || op == 0x03 || op == 0x04 || op == 0x06: // block, loop, if, try
		r.blockType()
	case op == 0x07 || op == 0x08 || op == 0x09 || op == 0x18: // catch, throw, rethrow, delegate
		r.u32()
	case op == 0x0c || op == 0x0d: // br, br_if
		r.u32()
	case op == 0x0e: // br_table
		n := r.u32()
		for i := uint32(0); i <= n && r.err == nil; i++ {
			r.u32()
		}
	case op == 0x10 || op == 0x12: // call, return_call
		r.u32()
	case op == 0x11 || op == 0x13: // call_indirect, return_call_indirect
		r.u32()
		r.u32()
	case op == 0x1c: // select t*
		n := r.u32()
		for i := uint32(0); i < n && r.err == nil; i++ {
			r.valType()
		}
	case op == 0x1f: // try_table
		r.blockType()
		n := r.u32()
		for i := uint32(0); i < n && r.err == nil; i++ {
			if k := r.byte(); k <= 1 { // catch, catch_ref: tag, label
				r.u32()
			}
			r.u32()
		}
	case op >= 0x20 && op <= 0x26: // local.*, global.*, table.get/set
		r.u32()
	case op >= 0x28 && op <= 0x3e: // loads and stores
		r.memArg()
	case op == 0x3f || op == 0x40: // memory.size, memory.grow
		r.u32()
	case op == 0x41: // i32.const
		r.leb(5)
	case op == 0x42: // i64.const
		r.leb(10)
	case op == 0x43:
		r.take(4)
	case op == 0x44:
		r.take(8)
	case op == 0xd0: // ref.null
		r.heapType()
	case op == 0xd2: // ref.func
		r.u32()
	case op == 0xfc:
		skipFC(r, r.u32())
	case op == 0xfd:
		skipSIMD(r, r.u32())
	case op == 0xfe: // threads
		if sub := r.u32(); sub == 0x03 { // atomic.fence
			r.byte()
		} else {
			r.memArg()
		}
	case op <= 0x01 || op == 0x05 || op == 0x0a || op == 0x0b || op == 0x0f || op == 0x19 ||
		op == 0x1a || op == 0x1b || (op >= 0x45 && op <= 0xc4) || op == 0xd1:
		// No immediates.
	default:
		r.fail(fmt.Errorf("unknown opcode %#x", op))
	}
}

func skipFC(r *reader, sub uint32) {
	switch {
	case sub <= 7: // saturating truncations
	case sub == 8 || sub == 10 || sub == 12 || sub == 14: // memory.init, memory.copy, table.init, table.copy
		r.u32()
		r.u32()
	case sub == 9 || sub == 11 || sub == 13 || (sub >= 15 && sub <= 17): // data.drop, memory.fill, elem.drop, table.grow/size/fill
		r.u32()
	default:
		r.fail(fmt.Errorf("unknown opcode 0xfc %d", sub))
	}
}

func skipSIMD(r *reader, sub uint32) {
	switch {
	case sub <= 11 || sub == 92 || sub == 93: // loads and stores
		r.memArg()
	case sub == 12 || sub == 13: // v128.const, i8x16.shuffle
		r.take(16)
	case sub >= 21 && sub <= 34: // extract and replace lane
		r.byte()
	case sub >= 84 && sub <= 91: // load and store lane
		r.memArg()
		r.byte()
	case sub <= 275:
		// No immediates.
	default:
		r.fail(fmt.Errorf("unknown opcode 0xfd %d", sub))
	}
}

// reader walks a binary; the first error sticks and later reads return
// zero values.
type reader struct {
	b   []byte
	off int
	err error
}

var errTruncated = errors.New("truncated")

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.off = len(r.b)
}

func (r *reader) done() bool { return r.off >= len(r.b) }

func (r *reader) byte() byte {
	if r.off >= len(r.b) {
		r.fail(errTruncated)
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) take(n uint32) []byte {
	if uint64(n) > uint64(len(r.b)-r.off) {
		r.fail(errTruncated)
		return nil
	}
	b := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return b
}

// leb skips a LEB128 number of at most max bytes and returns its low 64
// bits (as unsigned).
func (r *reader) leb(max int) uint64 {
	var v uint64
	for i := 0; i < max; i++ {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if i < 10 {
			v |= uint64(c&0x7f) << (7 * i)
		}
		if c&0x80 == 0 {
			return v
		}
	}
	r.fail(errors.New("LEB128 number too long"))
	return 0
}

func (r *reader) u32() uint32 {
	v := r.leb(5)
	if v > 0xffffffff {
		r.fail(errors.New("u32 out of range"))
		return 0
	}
	return uint32(v)
}

// blockType reads an empty type (0x40), a value type (one byte, negative
// as s33) or a type index (a non-negative s33).
func (r *reader) blockType() {
	if r.off < len(r.b) && r.b[r.off]&0xc0 == 0x40 {
		r.off++ // one-byte negative s33: 0x40 or a value type
		return
	}
	r.leb(5)
}

func (r *reader) valType() {
	switch c := r.byte(); c {
	case 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f:
	case 0x63, 0x64: // (ref null? ht)
		r.heapType()
	default:
		if r.err == nil {
			r.fail(fmt.Errorf("unknown value type %#x", c))
		}
	}
}

func (r *reader) heapType() { r.leb(5) }

// limits reads table or memory limits and returns their flags.
func (r *reader) limits() byte {
	flags := r.byte()
	r.leb(10)
	if flags&1 != 0 {
		r.leb(10)
	}
	return flags
}

// memArg reads alignment (bit 6: a memory index follows) and offset.
func (r *reader) memArg() {
	align := r.u32()
	if align&0x40 != 0 {
		r.u32()
	}
	r.leb(10)
}

func binary32(b []byte, v uint32) []byte {
	return binary.AppendUvarint(b, uint64(v))
}
