#!/usr/bin/env bash
# Models for "One Attention op": pruned FP32 models, the peer, and static INT8 (ORT form) --unpad of
# each with this change (*.op.onnx). The "before" models (*.packed.onnx, keys read transposed, no
# Attention op) were built the same way by the release build of 0030666.
set -euo pipefail
B=/work/main/target/release/onnx-compress
export ORT_DYLIB_PATH=/work/main/.ort/lib/libonnxruntime.so.1.32.0
S=/work/shared; V=/work/vnni; O=/work/packed
for T in sst2 mrpc; do
  M=$S/models/minilm-l6-$T/model.onnx; TR=$S/data/glue/$T/train.tsv
  [ -f $V/$T.p60.onnx ] || $B -q prune --task $T --target-macs 0.6 --calib-data $TR $M $V/$T.p60.onnx
  [ -f $V/$T.p50.onnx ] || $B -q prune --task $T --target-macs 0.5 --max-ffn-fraction 0.98 --calib-data $TR $M $V/$T.p50.onnx
  [ -f $V/$T-ort_dynamic.onnx ] || /work/venv-bench/bin/python /work/main/bench/ort_quantize.py --task $T --model $M --out-dir $V --data $S/data/glue
done
M=$S/models/minilm-l6-mrpc/model.onnx; TR=$S/data/glue/mrpc/train.tsv
[ -f $V/mrpc.p40.onnx ] || $B -q prune --task mrpc --target-macs 0.4 --max-ffn-fraction 0.98 --calib-samples 1024 --calib-data $TR $M $V/mrpc.p40.onnx
for T in sst2 mrpc; do
  TR=$S/data/glue/$T/train.tsv
  for P in p60 p50 p40; do
    [ -f $V/$T.$P.onnx ] || continue
    $B -q quantize --mode static --static-form ort --task $T --calib-data $TR --unpad $V/$T.$P.onnx $O/$T.$P.op.onnx
  done
done
echo built
