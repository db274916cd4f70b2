package proxywasm

import "encoding/binary"

// The header-map codec is plain Go (no build tag) so that it is tested on
// the build machine, not only inside a guest.

// encodeMap serializes headers in the ABI's layout: u32 count, u32 name and
// value lengths, then NUL-terminated names and values.
func encodeMap(hs [][2]string) []byte {
	if len(hs) == 0 {
		return nil
	}
	n := 4 + 8*len(hs)
	for _, h := range hs {
		n += len(h[0]) + len(h[1]) + 2
	}
	b := make([]byte, 0, n)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(hs)))
	for _, h := range hs {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(h[0])))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(h[1])))
	}
	for _, h := range hs {
		b = append(b, h[0]...)
		b = append(b, 0)
		b = append(b, h[1]...)
		b = append(b, 0)
	}
	return b
}

// decodeMap is encodeMap's inverse; a malformed map decodes to what fits.
func decodeMap(b []byte) [][2]string {
	if len(b) < 4 {
		return nil
	}
	n := int(binary.LittleEndian.Uint32(b))
	if 4+8*n > len(b) {
		return nil
	}
	out := make([][2]string, 0, n)
	data := b[4+8*n:]
	for i := 0; i < n; i++ {
		kl := int(binary.LittleEndian.Uint32(b[4+8*i:]))
		vl := int(binary.LittleEndian.Uint32(b[8+8*i:]))
		if kl+vl+2 > len(data) {
			break
		}
		out = append(out, [2]string{string(data[:kl]), string(data[kl+1 : kl+1+vl])})
		data = data[kl+vl+2:]
	}
	return out
}
