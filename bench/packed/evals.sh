#!/usr/bin/env bash
# Dev accuracy of every benchmark model (release build of this change).
set -euo pipefail
B=/work/main/target/release/onnx-compress
export ORT_DYLIB_PATH=/work/main/.ort/lib/libonnxruntime.so.1.32.0
cd /work/packed
for f in sst2.*.onnx mrpc.*.onnx; do
  T=${f%%.*}
  printf '%s %s\n' "$f" "$($B -q eval --task $T --model $f --json | python3 -c 'import json,sys; d=json.load(sys.stdin)["metrics"]; print(d["accuracy"], d.get("f1"))')"
done
