// Package testutil is the test harness both planes share: free loopback
// addresses, a poll-until helper whose timeout says what it last saw, HTTP
// helpers, real backend servers on 127.0.0.1, signing keys, loggers and
// cleanup.
//
// It imports neither plane. Starting a plane lives in a sub-package that
// imports only that plane: proxytest starts an OmniRelay data plane from a
// YAML string, meshtest starts MeshKit. Tests under internal/dataplane may
// use testutil and proxytest, tests under internal/controlplane testutil
// and meshtest; internal/e2e, which runs both planes together, may use all
// three. internal/planes_test.go checks that rule.
package testutil
