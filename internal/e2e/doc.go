// Package e2e holds the end-to-end tests that run both planes together:
// MeshKit and OmniRelay processes' assemblies talking real xDS on loopback,
// driven through MeshKit's API. It has no code besides its tests.
package e2e
