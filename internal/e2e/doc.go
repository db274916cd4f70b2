// Package e2e holds the tests that need both planes: MeshKit and OmniRelay
// assemblies talking real xDS on loopback, driven through MeshKit's API, and
// the proxy's identity agent against MeshKit's identity service. It is the
// one place allowed to import both planes (internal/planes_test.go checks
// that nothing else does). It has no code besides its tests.
package e2e
