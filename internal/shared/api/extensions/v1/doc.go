// Package extensionsv1 is the generated Go code for the extension HTTP
// filter's typed config (extension.proto: Extension, Canary, Policy; the
// translator writes it and the data plane's extension filter reads it) and
// for MeshKit's package store (packages.proto: the Packages service that
// omnictl ext push/list use). Edit the .proto files and run ../gen.sh, never
// the .pb.go files.
package extensionsv1
