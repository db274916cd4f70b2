// Package http2core is the HTTP/2 connection machinery shared by the data
// plane's HTTP/2 server and client (internal/dataplane/h2) and MeshKit's
// lean gRPC/xDS transport (internal/controlplane/xdsserver): the connection
// preface, SETTINGS validation and application, connection- and stream-level
// flow-control windows with their WINDOW_UPDATE policy, frame writers for
// every frame a connection sends, a frame reader that reads HEADERS without
// an allocation and assembles header blocks split over CONTINUATION frames
// within a size limit, the HPACK decoding glue, and the error codes that
// end a stream or a connection.
//
// It owns no goroutine, socket or lock: each user keeps its own connection
// shape (the data plane's buffered writer goroutine and per-stream
// goroutines, the lean transport's single reader goroutine and non-blocking
// writes) and calls into this package under its own lock. Types here are
// plain values so that embedding them costs no more than the fields they
// replace: the lean transport's idle connection must stay near 9 KB.
//
// It is written on golang.org/x/net/http2's Framer and hpack rather than on
// x/net/http2's Server and Transport: those adapt every stream to net/http's
// types, move every frame between goroutines over channels, issue one write
// per frame and keep several goroutines per connection, which is what both
// planes were hand-written to avoid. The Framer still parses and validates
// incoming frames and hpack decodes header blocks: the parts that are easy to
// get subtly wrong and cheap to reuse.
package http2core
