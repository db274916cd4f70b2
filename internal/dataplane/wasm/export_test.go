package wasm

// Exported for the external tests (proxy_test.go), which cannot be in this
// package: they start the proxy, which imports it.
var (
	Guest        = guest
	GuestTest    = guestTest
	GuestAdd     = guestAdd
	GuestDeny    = guestDeny
	GuestCallout = guestCallout

	GuestTrailers = "examples/extensions/wasm/grpc-trailers"
	GuestTCPGuard = "examples/extensions/wasm/tcp-guard"
)
