#!/usr/bin/env bash
# --unpad on the ModernBERT-base-shaped model of big.sh: static INT8 (ORT form, one Attention op)
# packed (this build) against the same model built before the packing took ModernBERT's gated FFN
# (O/sort.op.onnx from big.sh's run, split blocks padded), paired against FP32 on SST-2 dev, with
# their dev logits compared; nothing else running.
#   bench/attention_op/modernbert_pack.sh    (O: big.sh's work folder, default /work/modernbert-op)
set -euo pipefail
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-/work/main/.ort/lib/libonnxruntime.so.1.32.0}
B=/work/main/target/release/onnx-compress; P=${PY:-/work/venv-bench/bin/python}
O=${O:-/work/modernbert-op}; D=/work/shared/data/glue; M=$O/modernbert-base/model.onnx
$B quantize --mode static --static-form ort --unpad --calib-data $D/sst2/train.tsv $M $O/sort.op.packed.onnx > $O/sort.op.packed.txt
$B diff -q --json --task sst2 --data $D $O/sort.op.onnx $O/sort.op.packed.onnx > $O/pack.diff.json
$P bench/paired_speed.py --task sst2 --data $D --batch-size 32 --rounds 3 --json \
  $M $O/sort.op.onnx $O/sort.op.packed.onnx > $O/paired-pack.json 2> $O/paired-pack.err
echo done
