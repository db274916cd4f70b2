// Package h2 owns the data plane's HTTP/2 connections in both directions: a
// Server that serves downstream HTTP/2 (h2c with prior knowledge, or h2 over
// a TLS connection the caller has already negotiated) and a Client that
// multiplexes upstream requests over pooled HTTP/2 connections.
//
// It is hand-written rather than built on golang.org/x/net/http2's Server and
// Transport because those adapt every stream to net/http's types (a request,
// a response writer, header maps), hand every frame between goroutines over
// channels and issue a write syscall per frame. Here a stream exposes the
// data plane's own message.Request/message.Response, header fields are
// decoded straight into the message's arena, and frames written by many
// streams are appended to one per-connection buffer that a writer goroutine
// flushes once the runnable streams have had their turn, so that one syscall
// carries the frames of many streams.
//
// Only the parts that are easy to get subtly wrong and cheap to reuse come
// from x/net: http2.Framer parses and validates incoming frames and
// hpack.Decoder decodes header blocks. Frames are written by small append
// helpers (frame.go) into the shared buffer, and header blocks are encoded by
// an HPACK encoder whose dynamic table owns its bytes (hpack.go), because
// hpack.Encoder keeps the strings it is given and would force a string
// allocation per field.
//
// Connection state machines follow RFC 9113: SETTINGS exchange, PING,
// GOAWAY (graceful drain and errors), RST_STREAM, connection and stream flow
// control, CONTINUATION, PRIORITY (parsed and ignored), header list limits,
// concurrent stream limits and the malformed-message rules of section 8.
package h2
