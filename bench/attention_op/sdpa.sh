#!/usr/bin/env bash
# One Attention op on the dynamo + SDPA re-exports of the shared models (scripts/reexport_shared.py,
# torch 2.15, transformers 5.24, in R=/work/reexport): static INT8 (ORT form, --unpad) with and
# without the op, their dev predictions compared, then paired speed beside the classic export's
# FP32 and the re-export's FP32; nothing else running.
set -euo pipefail
export ORT_DYLIB_PATH=/work/main/.ort/lib/libonnxruntime.so.1.32.0
B=/work/main/target/release/onnx-compress; P=/work/venv-bench/bin/python
S=/work/shared; R=${R:-/work/reexport}; O=${O:-/work/sdpa-op}; mkdir -p $O
for T in sst2 mrpc; do
  M=$R/minilm-l6-$T-dynamo-sdpa/model.onnx; TR=$S/data/glue/$T/train.tsv
  q="$B quantize --mode static --static-form ort --unpad --calib-data $TR $M"
  $q $O/$T.op.onnx > $O/$T.op.txt
  $q --no-attention-op $O/$T.sep.onnx > $O/$T.sep.txt
  $B diff -q --json --task $T --data $S/data/glue $O/$T.sep.onnx $O/$T.op.onnx > $O/$T.diff.json
  BS=32; [ $T = mrpc ] && BS=24
  $P bench/paired_speed.py --task $T --data $S/data/glue --batch-size $BS --rounds 5 --json \
    $S/models/minilm-l6-$T/model.onnx $M $O/$T.sep.onnx $O/$T.op.onnx > $O/paired-$T.json 2> $O/paired-$T.err
done
echo done
