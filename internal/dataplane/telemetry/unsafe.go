package telemetry

import "unsafe"

// unsafeBytes views s as bytes for a read-only lookup (never written).
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
