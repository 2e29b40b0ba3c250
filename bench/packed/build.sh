#!/usr/bin/env bash
# Packed tokens (this build) against the per-block unpadding of HEAD 17277eb (/work/target-proto: HEAD, its prototype hook off).
set -euo pipefail
NEW=/work/main/target/release/onnx-compress; OLD=/work/target-proto/release/onnx-compress
export ORT_DYLIB_PATH=/work/main/.ort/lib/libonnxruntime.so.1.32.0
S=/work/shared; V=/work/vnni; O=/work/packed
for T in sst2 mrpc; do
  M=$S/models/minilm-l6-$T/model.onnx; TR=$S/data/glue/$T/train.tsv
  for P in base p60 p50; do
    IN=$V/$T.$P.onnx; [ $P = base ] && IN=$M
    $OLD -q quantize --mode static --static-form ort --task $T --calib-data $TR --unpad $IN $O/$T.$P.blocks.onnx >/dev/null
    $NEW -q quantize --mode static --static-form ort --task $T --calib-data $TR --unpad $IN $O/$T.$P.packed.onnx >/dev/null
  done
  $OLD -q quantize --mode dynamic --unpad $M $O/$T.base.dyn.blocks.onnx >/dev/null
  $NEW -q quantize --mode dynamic --unpad $M $O/$T.base.dyn.packed.onnx >/dev/null
done
echo built
