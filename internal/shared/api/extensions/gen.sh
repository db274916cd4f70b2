#!/bin/sh
# Regenerates the Go code for the extension filter's config proto. CI does
# not run protoc: the generated file is committed. Needs protoc (Debian
# protobuf-compiler, 3.21) and protoc-gen-go at the pinned version:
#   GOBIN=/tmp/protoc-bin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   PATH=/tmp/protoc-bin:$PATH ./gen.sh
set -eu
cd "$(dirname "$0")"
protoc --go_out=. --go_opt=paths=source_relative v1/extension.proto
