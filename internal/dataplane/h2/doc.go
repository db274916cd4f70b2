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
// The connection machinery both directions share with MeshKit's lean xDS
// transport (frame writers, settings validation, flow-control windows, the
// HEADERS/CONTINUATION reader, HPACK decoding glue, error codes) lives in
// internal/shared/http2core, on x/net's http2.Framer and hpack.Decoder.
// What is this package's own: the per-connection write buffer and its
// writer goroutine, stream goroutines and their blocking reads and writes,
// the header sink that decodes into message arenas (headers.go), and an
// HPACK encoder whose dynamic table owns its bytes (hpack.go), because
// hpack.Encoder keeps the strings it is given and would force a string
// allocation per field.
//
// Connection state machines follow RFC 9113: SETTINGS exchange, PING,
// GOAWAY (graceful drain and errors), RST_STREAM, connection and stream flow
// control, CONTINUATION, PRIORITY (parsed and ignored), header list limits,
// concurrent stream limits and the malformed-message rules of section 8.
package h2
