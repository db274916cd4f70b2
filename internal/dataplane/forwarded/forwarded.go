// Package forwarded applies Envoy's request-header rules for a proxy hop:
// x-forwarded-for (append, and which entry is the trusted client address
// under use_remote_address and xff_num_trusted_hops), x-forwarded-proto,
// x-envoy-external-address and x-request-id (generated, or kept per
// preserve_external_request_id). The client address it returns is the one
// RBAC's remote-IP rules and access logs use.
//
// It is hand-written because it runs on every request and must not
// allocate: the appended x-forwarded-for value and the request id are built
// in fixed buffers and copied into the request's header arena once.
package forwarded

import (
	"math/rand/v2"
	"net/netip"
	"unsafe"

	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

// Options are one listener's settings (Envoy's HttpConnectionManager
// fields of the same names).
type Options struct {
	// UseRemoteAddress makes the connection's peer the first trusted hop:
	// it is appended to x-forwarded-for and, with TrustedHops 0, is the
	// client address. Edge proxies set it.
	UseRemoteAddress bool
	// TrustedHops is xff_num_trusted_hops: how many proxies in front of
	// this one append to x-forwarded-for and are trusted.
	TrustedHops uint32
	// SkipXFFAppend keeps x-forwarded-for as received.
	SkipXFFAppend bool
	// GenerateRequestID sets x-request-id when absent (Envoy's default is
	// on; a listener config's nil means on).
	GenerateRequestID bool
	// PreserveExternalRequestID keeps an external client's x-request-id
	// (by default one is generated for requests from outside).
	PreserveExternalRequestID bool
}

// Client is what Apply found out about the request's origin.
type Client struct {
	// Addr is the trusted client address: the connection's peer, or the
	// x-forwarded-for entry the trusted hops point at.
	Addr netip.Addr
	// External is set when UseRemoteAddress is on and Addr is not an
	// internal address (RFC 1918, loopback, unique local).
	External bool
}

const (
	hdrXFF      = "x-forwarded-for"
	hdrXFP      = "x-forwarded-proto"
	hdrExternal = "x-envoy-external-address"
	hdrReqID    = "x-request-id"
)

// Apply rewrites req's forwarding headers for a request that arrived from
// remote over a connection that is TLS or not, and returns the client.
func Apply(req *message.Request, remote netip.Addr, tls bool, o *Options) Client {
	remote = remote.Unmap()
	c := Client{Addr: remote}
	xff, hasXFF := req.Header.Get(hdrXFF)
	if req.Header.Count(hdrXFF) > 1 {
		// Several fields are one comma-separated list (RFC 9110 5.3);
		// join them so the entries count from the right as Envoy does.
		xff = joinFields(req, xff)
	}
	if o.UseRemoteAddress {
		if o.TrustedHops > 0 && hasXFF {
			if a, ok := fromRight(xff, int(o.TrustedHops)); ok {
				c.Addr = a
			}
		}
		if !o.SkipXFFAppend && remote.IsValid() {
			var buf [512]byte
			v := buf[:0]
			if hasXFF && len(xff) > 0 {
				v = append(v, xff...)
				v = append(v, ',', ' ')
			}
			v = remote.AppendTo(v)
			req.Header.SetBytes(hdrXFF, v)
		}
		c.External = c.Addr.IsValid() && !internal(c.Addr)
		if c.External {
			var buf [64]byte
			req.Header.SetBytes(hdrExternal, c.Addr.AppendTo(buf[:0]))
		} else {
			req.Header.Del(hdrExternal)
		}
	} else if hasXFF {
		if a, ok := fromRight(xff, int(o.TrustedHops)+1); ok {
			c.Addr = a
		}
	}
	// A value set by an untrusted prior hop is replaced with this
	// connection's scheme; with trusted hops one that is present is kept.
	if o.TrustedHops == 0 || !req.Header.Has(hdrXFP) {
		if tls {
			req.Header.Set(hdrXFP, "https")
		} else {
			req.Header.Set(hdrXFP, "http")
		}
	}
	if o.GenerateRequestID {
		if !req.Header.Has(hdrReqID) || c.External && !o.PreserveExternalRequestID {
			var id [36]byte
			req.Header.SetBytes(hdrReqID, NewRequestID(&id))
		}
	}
	return c
}

func joinFields(req *message.Request, first []byte) []byte {
	var out []byte
	for i := 0; i < req.Header.Len(); i++ {
		f := req.Header.At(i)
		if !message.EqualFold(f.Name, hdrXFF) {
			continue
		}
		if len(out) > 0 {
			out = append(out, ',', ' ')
		}
		out = append(out, f.Value...)
	}
	if out == nil {
		return first
	}
	return out
}

// fromRight returns the n-th address (1-based) from the right end of an
// x-forwarded-for value. An entry that is not an address (with or without a
// port) yields false: it cannot be trusted.
func fromRight(v []byte, n int) (netip.Addr, bool) {
	end := len(v)
	for i := len(v) - 1; i >= -1; i-- {
		if i >= 0 && v[i] != ',' {
			continue
		}
		n--
		if n == 0 {
			return parseEntry(v[i+1 : end])
		}
		end = i
	}
	return netip.Addr{}, false
}

func parseEntry(b []byte) (netip.Addr, bool) {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	if len(b) == 0 || len(b) > 64 {
		return netip.Addr{}, false
	}
	// The parsers keep nothing of their argument (a zone is interned, a
	// copy), so the header's bytes are viewed as a string for the call
	// instead of copied into one.
	s := unsafe.String(&b[0], len(b))
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// internal reports Envoy's notion of an internal address.
func internal(a netip.Addr) bool {
	return a.IsLoopback() || a.IsPrivate()
}

// NewRequestID writes a random (version 4) UUID into id and returns it.
// math/rand/v2's generator is per-thread and lock-free; a request id needs
// uniqueness, not secrecy.
func NewRequestID(id *[36]byte) []byte {
	hi, lo := rand.Uint64(), rand.Uint64()
	hi = hi&^(0xf<<12) | 4<<12         // version 4
	lo = lo&^(0x3<<62) | uint64(2)<<62 // RFC 4122 variant
	var raw [16]byte
	for i := range 8 {
		raw[i] = byte(hi >> (56 - 8*i))
		raw[8+i] = byte(lo >> (56 - 8*i))
	}
	const hexd = "0123456789abcdef"
	j := 0
	for i, b := range raw {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			id[j] = '-'
			j++
		}
		id[j], id[j+1] = hexd[b>>4], hexd[b&0xf]
		j += 2
	}
	return id[:]
}
