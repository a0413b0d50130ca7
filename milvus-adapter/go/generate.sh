#!/usr/bin/env bash
# milvus-adapter/go/generate.sh: regenerates walpb/ (the Go messages and gRPC client of
# proto/proto/milvus_wal.proto) with pinned generators from the Go module proxy and the
# protoc the protoc-bin-vendored crate ships (scripts/protoc). The generated files are checked
# in, so building the Go package needs neither protoc nor the generators.
#
#   milvus-adapter/go/generate.sh           rewrite walpb/
#   milvus-adapter/go/generate.sh --check   fail when walpb/ differs from a fresh generation
set -euo pipefail

PROTOC_GEN_GO=v1.36.10      # google.golang.org/protobuf, as Milvus 2.6.23's go.mod
PROTOC_GEN_GO_GRPC=v1.5.1   # google.golang.org/grpc/cmd/protoc-gen-go-grpc

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MODULE=$(awk '$1 == "module" { print $2; exit }' "$HERE/go.mod")
TOOLS="$HOME/.cache/woodpecker-rs/go-tools/protoc-gen-go-$PROTOC_GEN_GO-grpc-$PROTOC_GEN_GO_GRPC"

if [[ ! -x $TOOLS/protoc-gen-go || ! -x $TOOLS/protoc-gen-go-grpc ]]; then
    mkdir -p "$TOOLS"
    GOBIN="$TOOLS" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO"
    GOBIN="$TOOLS" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC"
fi

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
PATH="$TOOLS:$PATH" "$ROOT/scripts/protoc" \
    --proto_path="$ROOT/proto/proto" \
    --go_out="$OUT" --go_opt=module="$MODULE" \
    --go-grpc_out="$OUT" --go-grpc_opt=module="$MODULE" \
    milvus_wal.proto

if [[ ${1:-} == --check ]]; then
    if ! diff -r "$OUT/walpb" "$HERE/walpb"; then
        echo "walpb/ is out of date with proto/proto/milvus_wal.proto: run $0" >&2
        exit 1
    fi
    exit 0
fi
rm -f "$HERE"/walpb/*.pb.go
cp "$OUT"/walpb/*.pb.go "$HERE/walpb/"
echo "generated $(ls "$HERE"/walpb/*.pb.go | wc -l) files in $HERE/walpb" >&2
