#!/bin/sh
# Regenerates the Go code for the extension filter's config proto and
# MeshKit's package store service. CI does not run protoc: the generated
# files are committed. Needs protoc (Debian protobuf-compiler, 3.21) and the
# two plugins at the pinned versions:
#   GOBIN=/tmp/protoc-bin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   GOBIN=/tmp/protoc-bin go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
#   PATH=/tmp/protoc-bin:$PATH ./gen.sh
set -eu
cd "$(dirname "$0")"
protoc \
	--go_out=. --go_opt=paths=source_relative \
	--go-grpc_out=. --go-grpc_opt=paths=source_relative \
	v1/extension.proto v1/packages.proto
