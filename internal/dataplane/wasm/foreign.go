package wasm

import (
	"bytes"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protowire"
)

// Foreign functions (proxy_call_foreign_function): the ones of Envoy's that
// a plugin can use without Envoy's internals. Each takes the argument bytes
// and returns the result bytes, or a status for the guest.
var foreignFuncs = map[string]func(in *instance, arg []byte) ([]byte, uint32){
	// compress / uncompress: zlib (RFC 1950) at the default level, as
	// Envoy's (zlib's compress()). The data is the same, the bytes are not
	// always: Go's deflate closes the stream with an empty stored block
	// where zlib marks the last data block final.
	"compress":   foreignCompress,
	"uncompress": foreignUncompress,
	// declare_property: declares a property the plugin then sets with
	// proxy_set_property; readonly ones can be set once per stream.
	"declare_property": foreignDeclareProperty,
}

// maxForeignResult bounds what uncompress may produce for a guest.
const maxForeignResult = 16 << 20

func hostCallForeignFunction(ctx context.Context, in *instance, a []uint64) uint32 {
	name, ok1 := in.read(u32(a[0]), u32(a[1]))
	arg, ok2 := in.read(u32(a[2]), u32(a[3]))
	if !ok1 || !ok2 {
		return statusInvalidMemoryAccess
	}
	fn, ok := foreignFuncs[string(name)]
	if !ok {
		return statusNotFound
	}
	out, st := fn(in, arg)
	if st != statusOK {
		return st
	}
	return in.returnBytes(ctx, out, u32(a[4]), u32(a[5]))
}

func foreignCompress(_ *instance, arg []byte) ([]byte, uint32) {
	var b bytes.Buffer
	w := zlib.NewWriter(&b)
	if _, err := w.Write(arg); err != nil {
		return nil, statusInternalFailure
	}
	if err := w.Close(); err != nil {
		return nil, statusInternalFailure
	}
	return b.Bytes(), statusOK
}

func foreignUncompress(_ *instance, arg []byte) ([]byte, uint32) {
	r, err := zlib.NewReader(bytes.NewReader(arg))
	if err != nil {
		return nil, statusSerializationFailed
	}
	out, err := io.ReadAll(io.LimitReader(r, maxForeignResult+1))
	if err != nil {
		return nil, statusSerializationFailed
	}
	if len(out) > maxForeignResult {
		return nil, statusInternalFailure
	}
	return out, statusOK
}

// declaredProperty is a property a plugin declared with declare_property.
type declaredProperty struct {
	readonly bool
}

// parseDeclareProperty decodes Envoy's DeclarePropertyArguments
// (envoy.source.extensions.common.wasm.DeclarePropertyArguments: name = 1,
// readonly = 2, type = 3, schema = 4, span = 5). Type, schema and span are
// accepted and not used: values are bytes, scoped to the stream.
func parseDeclareProperty(b []byte) (name string, readonly bool, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", false, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", false, protowire.ParseError(n)
			}
			name, b = string(v), b[n:]
		case num == 2 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return "", false, protowire.ParseError(n)
			}
			readonly, b = v != 0, b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return "", false, protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	if name == "" {
		return "", false, errors.New("declare_property: no name")
	}
	return name, readonly, nil
}

func foreignDeclareProperty(in *instance, arg []byte) ([]byte, uint32) {
	name, readonly, err := parseDeclareProperty(arg)
	if err != nil {
		in.p.log.Warn("wasm declare_property refused", "reason", fmt.Sprint(err))
		return nil, statusBadArgument
	}
	if _, builtin := in.property([]byte(name)); builtin {
		return nil, statusBadArgument // a host property cannot be redeclared
	}
	in.p.declare(name, declaredProperty{readonly: readonly})
	return nil, statusOK
}

func (p *Plugin) declare(name string, d declaredProperty) {
	p.propsMu.Lock()
	defer p.propsMu.Unlock()
	if p.props == nil {
		p.props = map[string]declaredProperty{}
	}
	p.props[name] = d
}

func (p *Plugin) declared(name string) (declaredProperty, bool) {
	p.propsMu.Lock()
	defer p.propsMu.Unlock()
	d, ok := p.props[name]
	return d, ok
}
