#!/usr/bin/env bash
# One Attention op on a base-sized random-weight classifier of another architecture
# (bench/big_export.py --only NAME: mpnet-base, whose attention adds its relative position bias
# beside the mask; modernbert-base, whose Q and K are rotated as [batch, heads, seq, head], so the
# op takes that layout; deberta-v3-base, whose attention runs on [batch·heads, seq, head] with its
# relative position bias): dynamic INT8 and static INT8 (ORT form, --unpad) with and without the
# op, paired against its FP32 on SST-2 dev (random weights: the speed counts, the accuracy does
# not); nothing else running.
#   bench/attention_op/big.sh NAME    (O: work folder, default /work/NAME-op; PY_TORCH: a Python
#                                      with torch and transformers; PY: one with onnxruntime)
set -euo pipefail
NAME=${1:?usage: bench/attention_op/big.sh mpnet-base|modernbert-base|deberta-v3-base}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-/work/main/.ort/lib/libonnxruntime.so.1.32.0}
B=/work/main/target/release/onnx-compress; P=${PY:-/work/venv-bench/bin/python}
O=${O:-/work/${NAME%-base}-op}; D=/work/shared/data/glue; mkdir -p $O
M=$O/$NAME/model.onnx
[ -f $M ] || ${PY_TORCH:-/work/venv-torch/bin/python} bench/big_export.py $O --only $NAME
$B quantize --mode dynamic $M $O/dyn.op.onnx > $O/dyn.op.txt
$B quantize --mode dynamic --no-attention-op $M $O/dyn.sep.onnx > $O/dyn.sep.txt
s="$B quantize --mode static --static-form ort --unpad --calib-data $D/sst2/train.tsv $M"
$s $O/sort.op.onnx > $O/sort.op.txt
$s --no-attention-op $O/sort.sep.onnx > $O/sort.sep.txt
$P bench/paired_speed.py --task sst2 --data $D --batch-size 32 --rounds 3 --json \
  $M $O/dyn.sep.onnx $O/dyn.op.onnx $O/sort.sep.onnx $O/sort.op.onnx > $O/paired.json 2> $O/paired.err
echo done
