#!/usr/bin/env bash
# Paired speed: FP32, the peer, the packed static models before this change (keys read
# transposed) and with one Attention op per attention (*.op.onnx); nothing else running.
set -euo pipefail
export ORT_DYLIB_PATH=/work/main/.ort/lib/libonnxruntime.so.1.32.0
P=/work/venv-bench/bin/python; S=/work/shared; V=/work/vnni; O=/work/packed
cd $O
for T in sst2 mrpc; do
  BS=32; [ $T = mrpc ] && BS=24
  extra=""; [ $T = mrpc ] && extra="$T.p40.op.onnx"
  $P /work/main/bench/paired_speed.py --task $T --batch-size $BS --rounds 7 --json \
    $S/models/minilm-l6-$T/model.onnx $V/$T-ort_dynamic.onnx \
    $T.p60.packed.onnx $T.p60.op.onnx $T.p50.op.onnx $extra > paired-$T.json 2> paired-$T.err
done
echo done
