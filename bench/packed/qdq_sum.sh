#!/usr/bin/env bash
# "Packed QDQ: the bias as Sum" (bench/RESULTS.md): static INT8 QDQ padded, packed before (each Sum
# written back as Add, the graph of the build before) and after, the ORT form packed; paired on dev.
set -euo pipefail
B=/work/main/target/release/onnx-compress
export ORT_DYLIB_PATH=/work/main/.ort/lib/libonnxruntime.so.1.32.0
S=/work/shared; O=${O:-/work/qdq}; PY=/work/venv-bench/bin/python; mkdir -p $O; cd /work/main
for T in sst2 mrpc; do
  M=$S/models/minilm-l6-$T/model.onnx; TR=$S/data/glue/$T/train.tsv
  $B quantize --mode static --task $T --calib-data $TR $M $O/$T.qdq.onnx
  $B quantize --mode static --unpad --task $T --calib-data $TR $M $O/$T.qdq.unpad.onnx
  $B quantize --mode static --static-form ort --unpad --task $T --calib-data $TR $M $O/$T.ort.unpad.onnx
  $PY bench/packed/qdq_sum.py $O/$T.qdq.unpad.onnx $O/$T.qdq.unpad.before.onnx add
  BS=32; [ $T = mrpc ] && BS=24
  $PY bench/paired_speed.py --task $T --data $S/data/glue --batch-size $BS --rounds 5 --json $M \
    $O/$T.qdq.onnx $O/$T.qdq.unpad.before.onnx $O/$T.qdq.unpad.onnx $O/$T.ort.unpad.onnx > $O/paired-$T.json 2> $O/paired-$T.err
done
