// Package extensionsv1 is the generated Go code for the extension HTTP
// filter's typed config (extension.proto: Extension, Canary, Policy). The
// translator writes it and the data plane's extension filter reads it; edit
// the .proto and run ../gen.sh, never the .pb.go file.
package extensionsv1
