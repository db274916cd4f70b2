package resources

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/cncf/xds/go/udpa/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
)

// Generated ValidateAll methods stop at google.protobuf.Any fields, yet every
// filter, transport socket and access log lives in one. These walkers open
// each Any whose type is linked into the binary (see types.go) so that its
// payload is validated and inspected too. Payloads of unknown types are left
// alone: whoever compiles the resource rejects them with a better message.

const anyFullName = "google.protobuf.Any"

type validatorAll interface{ ValidateAll() error }

// unpack returns the message inside a, or nil when its type is not linked in.
func unpack(a *anypb.Any) (proto.Message, error) {
	m, err := a.UnmarshalNew()
	if errors.Is(err, protoregistry.NotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("unpack %s: %w", a.GetTypeUrl(), err)
	}
	return m, nil
}

// validateNested runs ValidateAll on every Any payload reachable from m and
// reports each failure with its path below m.
func validateNested(m protoreflect.Message, path string) []error {
	var errs []error
	eachMessage(m, path, func(fm protoreflect.Message, p string) bool {
		if fm.Descriptor().FullName() != anyFullName {
			return true
		}
		a := asAny(fm)
		inner, err := unpack(a)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			return false
		}
		if inner == nil {
			return false
		}
		p = p + "(" + string(inner.ProtoReflect().Descriptor().FullName()) + ")"
		if v, ok := inner.(validatorAll); ok {
			if err := v.ValidateAll(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", p, err))
			}
		}
		errs = append(errs, validateNested(inner.ProtoReflect(), p)...)
		return false
	})
	return errs
}

// asAny converts a reflected Any (possibly a dynamic message) to *anypb.Any.
func asAny(m protoreflect.Message) *anypb.Any {
	if a, ok := m.Interface().(*anypb.Any); ok {
		return a
	}
	a := &anypb.Any{}
	fields := m.Descriptor().Fields()
	a.TypeUrl = m.Get(fields.ByName("type_url")).String()
	a.Value = m.Get(fields.ByName("value")).Bytes()
	return a
}

// eachMessage calls fn for every populated message-typed value below m
// (fields, list elements, map values), depth-first, with its path. fn returns
// false to stop descending into that value.
func eachMessage(m protoreflect.Message, path string, fn func(protoreflect.Message, string) bool) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return true
		}
		p := join(path, string(fd.Name()))
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				ep := p + "[" + strconv.Itoa(i) + "]"
				if em := l.Get(i).Message(); fn(em, ep) {
					eachMessage(em, ep, fn)
				}
			}
		case fd.IsMap():
			if fd.MapValue().Kind() != protoreflect.MessageKind {
				return true
			}
			for _, k := range sortedKeys(v.Map()) {
				ep := p + "[" + strconv.Quote(k.String()) + "]"
				if em := v.Map().Get(k).Message(); fn(em, ep) {
					eachMessage(em, ep, fn)
				}
			}
		default:
			if fm := v.Message(); fn(fm, p) {
				eachMessage(fm, p, fn)
			}
		}
		return true
	})
}

func sortedKeys(m protoreflect.Map) []protoreflect.MapKey {
	keys := make([]protoreflect.MapKey, 0, m.Len())
	m.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k)
		return true
	})
	slices.SortFunc(keys, func(a, b protoreflect.MapKey) int { return strings.Compare(a.String(), b.String()) })
	return keys
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

const redacted = "[redacted]"

// redact blanks the fields Envoy's API marks (udpa.annotations.sensitive),
// as Envoy's own config_dump does, opening Anys and re-packing those it
// changed. It reports whether m changed. A file name is kept: it locates the
// secret without revealing it.
func redact(m protoreflect.Message) (bool, error) {
	changed := false
	var firstErr error
	type item struct {
		fd protoreflect.FieldDescriptor
		v  protoreflect.Value
	}
	var items []item
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		items = append(items, item{fd, v})
		return true
	})
	for _, it := range items {
		fd, v := it.fd, it.v
		if isSensitive(fd) {
			if blank(m, fd, v) {
				changed = true
			}
			continue
		}
		if fd.Kind() != protoreflect.MessageKind {
			continue
		}
		visit := func(em protoreflect.Message) {
			c, err := redactValue(em)
			if err != nil && firstErr == nil {
				firstErr = err
			}
			changed = changed || c
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				visit(l.Get(i).Message())
			}
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					visit(mv.Message())
					return true
				})
			}
		default:
			visit(v.Message())
		}
	}
	return changed, firstErr
}

func redactValue(m protoreflect.Message) (bool, error) {
	if m.Descriptor().FullName() != anyFullName {
		return redact(m)
	}
	a, ok := m.Interface().(*anypb.Any)
	if !ok {
		return false, nil
	}
	inner, err := unpack(a)
	if err != nil || inner == nil {
		return false, err
	}
	c, err := redact(inner.ProtoReflect())
	if err != nil || !c {
		return false, err
	}
	if err := anypb.MarshalFrom(a, inner, deterministic); err != nil {
		return false, fmt.Errorf("repack %s: %w", a.GetTypeUrl(), err)
	}
	return true, nil
}

func isSensitive(fd protoreflect.FieldDescriptor) bool {
	opts := fd.Options()
	if opts == nil {
		return false
	}
	s, ok := proto.GetExtension(opts, annotations.E_Sensitive).(bool)
	return ok && s
}

// blank replaces every string and bytes leaf under a sensitive field.
func blank(m protoreflect.Message, fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
	switch {
	case fd.IsList() || fd.IsMap():
		// No sensitive repeated fields exist in the API today; drop them whole
		// rather than risk showing one.
		m.Clear(fd)
		return true
	case fd.Kind() == protoreflect.StringKind:
		m.Set(fd, protoreflect.ValueOfString(redacted))
		return true
	case fd.Kind() == protoreflect.BytesKind:
		m.Set(fd, protoreflect.ValueOfBytes([]byte(redacted)))
		return true
	case fd.Kind() == protoreflect.MessageKind:
		changed := false
		inner := v.Message()
		var fds []protoreflect.FieldDescriptor
		var vs []protoreflect.Value
		inner.Range(func(f protoreflect.FieldDescriptor, iv protoreflect.Value) bool {
			fds = append(fds, f)
			vs = append(vs, iv)
			return true
		})
		for i, f := range fds {
			if f.Name() == "filename" {
				continue
			}
			if blank(inner, f, vs[i]) {
				changed = true
			}
		}
		return changed
	default:
		return false
	}
}
