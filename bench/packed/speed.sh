#!/usr/bin/env bash
# Paired speed: FP32, the peer, and each model with per-block unpadding (blocks) against packed tokens (packed).
set -euo pipefail
export ORT_DYLIB_PATH=/work/main/.ort/lib/libonnxruntime.so.1.32.0
P=/work/venv-bench/bin/python; S=/work/shared; V=/work/vnni; O=/work/packed
cd $O
for T in sst2 mrpc; do
  BS=32; [ $T = mrpc ] && BS=24
  $P /work/main/bench/paired_speed.py --task $T --batch-size $BS --rounds 9 --json \
    $S/models/minilm-l6-$T/model.onnx $V/$T-ort_dynamic.onnx \
    $T.base.dyn.blocks.onnx $T.base.dyn.packed.onnx $T.base.blocks.onnx $T.base.packed.onnx \
    $T.p60.blocks.onnx $T.p60.packed.onnx $T.p50.blocks.onnx $T.p50.packed.onnx > paired-$T.json 2> paired-$T.err
done
echo done
