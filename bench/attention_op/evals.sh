#!/usr/bin/env bash
# Dev accuracy of every benchmark model, and the before/after logits compared.
set -euo pipefail
B=/work/main/target/release/onnx-compress
export ORT_DYLIB_PATH=/work/main/.ort/lib/libonnxruntime.so.1.32.0
cd /work/packed
for f in sst2.*.onnx mrpc.*.onnx; do
  T=${f%%.*}
  printf '%s %s\n' "$f" "$($B -q eval --task $T --model $f --json | python3 -c 'import json,sys; d=json.load(sys.stdin)["metrics"]; print(d["accuracy"], d.get("f1"))')"
done
for T in sst2 mrpc; do
  printf '%s p60 packed vs op: %s\n' $T "$(/work/venv-bench/bin/python /work/main/bench/packed/cmp.py $T.p60.packed.onnx $T.p60.op.onnx $T 2>/dev/null | tail -1)"
done
