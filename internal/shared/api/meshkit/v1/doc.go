// Package meshkitv1 is the generated Go code for MeshKit's API
// (meshkit.proto: Registry, Config, Proxies, IdentityAdmin and Identity
// services). The messages are shared by the API server in the control
// plane, omnictl and the proxy's identity agent; edit the .proto and run
// ../../gen.sh, never the .pb.go files.
package meshkitv1
