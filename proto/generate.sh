#!/usr/bin/env bash
# Regenerate the Python protobuf/gRPC modules from proto/ into client/featviz/v1/, and the
# descriptor set with its comments (featviz.binpb: featviz.contract reads the fields' help there).
# `proto/generate.sh --check` fails when the committed modules are stale (CI runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
out=client
if [[ "${1:-}" == "--check" ]]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
python -m grpc_tools.protoc -Iproto --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  --include_source_info --descriptor_set_out="$out/featviz/v1/featviz.binpb" \
  proto/featviz/v1/featviz.proto
if [[ "${1:-}" == "--check" ]]; then
  for f in featviz_pb2.py featviz_pb2.pyi featviz_pb2_grpc.py featviz.binpb; do
    cmp -s "$out/featviz/v1/$f" "client/featviz/v1/$f" \
      || { echo "client/featviz/v1/$f is stale: run proto/generate.sh" >&2; exit 1; }
  done
  echo "generated code is up to date"
fi
