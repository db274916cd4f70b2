// Package meshkitv1 is the generated Go code for MeshKit's operator API
// (meshkit.proto: Registry, Config and Proxies services). The messages are
// shared by the API server in the control plane and by omnictl; edit the
// .proto and run ../../gen.sh, never the .pb.go files.
package meshkitv1
