// Package pathnorm normalizes request paths before routing and forwarding,
// with Envoy's HTTP connection manager options: normalize_path (RFC 3986
// section 6: percent-encoded unreserved characters decoded, hex digits upper
// case, dot segments removed, %2E counting as a dot), merge_slashes, and
// path_with_escaped_slashes_action for %2F and %5C. A path with a fragment
// ('#'), a raw backslash or a malformed percent-encoding is rejected.
//
// It exists so that the path a route matches is the path the backend
// serves: "/public/../admin", "/public/%2e%2e/admin" and "//admin" must not
// slip past a route or an RBAC rule written for "/admin" (the path-ACL
// bypass class). It is hand-written because it runs on every request: an
// already normal path (the common case) is checked in one pass and returned
// as is, without copying; otherwise the result is written into a buffer the
// caller owns and reuses.
package pathnorm

// EscapedSlashes says what to do with %2F and %5C in a path, as Envoy's
// path_with_escaped_slashes_action.
type EscapedSlashes uint8

const (
	// KeepEscapedSlashes leaves them encoded (hex digits upper-cased).
	KeepEscapedSlashes EscapedSlashes = iota
	// RejectEscapedSlashes answers 400.
	RejectEscapedSlashes
	// UnescapeAndRedirect answers a redirect to the path with them
	// decoded to '/'.
	UnescapeAndRedirect
	// UnescapeAndForward decodes them to '/' and goes on.
	UnescapeAndForward
)

// Options are one listener's normalization settings.
type Options struct {
	// Normalize applies RFC 3986 normalization (Envoy's normalize_path).
	Normalize bool
	// MergeSlashes collapses runs of '/' into one.
	MergeSlashes bool
	// EscapedSlashes handles %2F and %5C.
	EscapedSlashes EscapedSlashes
}

// Active reports whether o changes anything: a listener with nothing to do
// skips the scan.
func (o Options) Active() bool {
	return o.Normalize || o.MergeSlashes || o.EscapedSlashes != KeepEscapedSlashes
}

// Result says what the caller does with the request.
type Result uint8

const (
	// Forward: route and forward the returned path.
	Forward Result = iota
	// Reject: answer 400; the path is not acceptable.
	Reject
	// Redirect: answer a redirect to the returned path (escaped slashes
	// under UnescapeAndRedirect).
	Redirect
)

// Path normalizes path (the request target's path, without its query) under
// o. When nothing changes it returns path itself; otherwise the result is
// appended to dst[:0] and returned (dst is the caller's buffer, grown if
// needed). Rejected paths return (nil, Reject).
func Path(dst, path []byte, o Options) ([]byte, Result) {
	// One pass to see whether there is anything to do at all.
	dirty := false
	for i := 0; i < len(path); i++ {
		switch c := path[i]; c {
		case '#', '\\':
			return nil, Reject
		case '%':
			if i+2 >= len(path) || unhex(path[i+1]) < 0 || unhex(path[i+2]) < 0 {
				return nil, Reject
			}
			dirty = true
		case '/':
			if i+1 < len(path) && (path[i+1] == '/' && o.MergeSlashes || path[i+1] == '.' && o.Normalize) {
				dirty = true
			}
		default:
			if c < 0x21 || c == 0x7f {
				return nil, Reject
			}
		}
	}
	if !dirty || !o.Active() {
		return path, Forward
	}

	// Decode what normalization and the slash policy ask for; then remove
	// dot segments and merge slashes on the decoded form.
	out := dst[:0]
	res := Forward
	for i := 0; i < len(path); i++ {
		c := path[i]
		if c != '%' {
			out = append(out, c)
			continue
		}
		hi, lo := byte(unhex(path[i+1])), byte(unhex(path[i+2]))
		d := hi<<4 | lo
		i += 2
		switch {
		case d == '/' || d == '\\':
			switch o.EscapedSlashes {
			case RejectEscapedSlashes:
				return nil, Reject
			case UnescapeAndRedirect:
				res = Redirect
				out = append(out, '/')
			case UnescapeAndForward:
				out = append(out, '/')
			default:
				out = append(out, '%', upperHex[hi], upperHex[lo])
			}
		case o.Normalize && unreserved(d):
			out = append(out, d)
		default:
			out = append(out, '%', upperHex[hi], upperHex[lo])
		}
	}
	if o.Normalize {
		out = removeDotSegments(out)
	}
	if o.MergeSlashes {
		out = mergeSlashes(out)
	}
	return out, res
}

// removeDotSegments applies RFC 3986 section 5.2.4 in place: "." segments
// are dropped, ".." drops the segment before it (never above the root), and
// a path ending in either ends in '/'. The output p[:w] is a run of "/seg"
// pieces; each is written no further right than it was read, so one buffer
// serves as input and output.
func removeDotSegments(p []byte) []byte {
	if len(p) == 0 || p[0] != '/' {
		return p
	}
	w := 0
	for r := 0; r < len(p); {
		end := r + 1
		for end < len(p) && p[end] != '/' {
			end++
		}
		seg := p[r+1 : end]
		last := end == len(p)
		switch {
		case len(seg) == 1 && seg[0] == '.':
		case len(seg) == 2 && seg[0] == '.' && seg[1] == '.':
			for w > 0 {
				w--
				if p[w] == '/' {
					break
				}
			}
		default:
			p[w] = '/'
			w++
			w += copy(p[w:], seg)
			r = end
			continue
		}
		if last {
			p[w] = '/'
			w++
		}
		r = end
	}
	if w == 0 {
		return append(p[:0], '/')
	}
	return p[:w]
}

// mergeSlashes collapses runs of '/' in place.
func mergeSlashes(p []byte) []byte {
	w := 0
	for r := 0; r < len(p); r++ {
		if p[r] == '/' && w > 0 && p[w-1] == '/' {
			continue
		}
		p[w] = p[r]
		w++
	}
	return p[:w]
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

const upperHex = "0123456789ABCDEF"
