package wasm

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// pair is one header field as it crosses the ABI boundary.
type pair struct {
	Name, Value []byte
}

// errMapFormat reports a header map that the guest serialized badly.
var errMapFormat = errors.New("proxy-wasm header map: malformed")

// appendMap serializes pairs in the Proxy-Wasm layout: a little-endian u32
// count, then a (name length, value length) u32 pair per field, then each
// name and value followed by a NUL byte.
func appendMap(dst []byte, pairs []pair) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(pairs)))
	for _, p := range pairs {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(p.Name)))
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(p.Value)))
	}
	for _, p := range pairs {
		dst = append(dst, p.Name...)
		dst = append(dst, 0)
		dst = append(dst, p.Value...)
		dst = append(dst, 0)
	}
	return dst
}

// mapSize is len(appendMap(nil, pairs)) without building it.
func mapSize(pairs []pair) int {
	n := 4 + 8*len(pairs)
	for _, p := range pairs {
		n += len(p.Name) + len(p.Value) + 2
	}
	return n
}

// parseMap decodes a serialized header map. The returned slices alias b.
// It checks every length against the buffer so that a hostile guest cannot
// make the host read out of bounds or allocate without limit.
func parseMap(b []byte, dst []pair) ([]pair, error) {
	if len(b) == 0 {
		return dst, nil
	}
	if len(b) < 4 {
		return dst, fmt.Errorf("%w: %d bytes, need a 4-byte count", errMapFormat, len(b))
	}
	n := binary.LittleEndian.Uint32(b)
	// Each field needs 8 bytes of lengths and 2 NULs.
	if uint64(n)*10 > uint64(len(b)-4) {
		return dst, fmt.Errorf("%w: %d fields do not fit in %d bytes", errMapFormat, n, len(b))
	}
	sizes := b[4 : 4+8*n]
	data := b[4+8*n:]
	for i := uint32(0); i < n; i++ {
		kl := uint64(binary.LittleEndian.Uint32(sizes[8*i:]))
		vl := uint64(binary.LittleEndian.Uint32(sizes[8*i+4:]))
		if kl+vl+2 > uint64(len(data)) {
			return dst, fmt.Errorf("%w: field %d overruns the buffer", errMapFormat, i)
		}
		if data[kl] != 0 || data[kl+1+vl] != 0 {
			return dst, fmt.Errorf("%w: field %d is not NUL-terminated", errMapFormat, i)
		}
		dst = append(dst, pair{Name: data[:kl:kl], Value: data[kl+1 : kl+1+vl : kl+1+vl]})
		data = data[kl+vl+2:]
	}
	return dst, nil
}
