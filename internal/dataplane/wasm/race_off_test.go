//go:build !race

package wasm_test

// raceDeadline is empty: the SDK example tests run with the deadlines their
// configs give (the default 10ms where they give none).
const raceDeadline = ""
