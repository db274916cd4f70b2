//go:build race

package wasm_test

// raceDeadline replaces the extensions' default call deadline in the SDK
// example tests: the race detector slows the host's Go code (every host
// function a guest calls) several times over.
const raceDeadline = "2s"
