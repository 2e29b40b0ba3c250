#!/usr/bin/env bash
# Pruning for time rather than MACs (MRPC): the calibrated allocator prices a head at its
# projections plus its score and context products, 2·s²·d at --seq-len s. A larger --seq-len
# weighs the attention core more against the projections and FFN neurons, as its float kernel
# costs per MAC on the packed static INT8 models (about 11× an int8 GEMM MAC here, see
# bench/gemm_limit.py). Each allocation is pruned, quantized (static INT8, ORT form, --unpad), and
# evaluated on dev and on the (memorized) training file; then all are paired on dev against FP32.
#   bench/prune_time_weight.sh     (O: work folder, default bench/out/lat; PY: a Python with
#   onnxruntime, default python3; ONNX_COMPRESS, SHARED as in bench/attention_op/auto.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$ROOT/.ort/lib/libonnxruntime.so.1.32.0}
B=${ONNX_COMPRESS:-$ROOT/target/release/onnx-compress}; P=${PY:-python3}
S=${SHARED:-$ROOT/../shared}
O=${O:-$ROOT/bench/out/lat}; D=$S/data/glue; M=$S/models/minilm-l6-mrpc/model.onnx
mkdir -p $O
acc() { $B eval --task mrpc --model "$1" --split "$2" --json 2>/dev/null |
  $P -c "import json,sys; print(json.load(sys.stdin)['metrics']['accuracy'])"; }
echo "model dev train" > $O/acc.txt
echo "fp32 $(acc $M dev) $(acc $M train)" >> $O/acc.txt
models=()
for spec in "128 0.63" "128 0.60" "512 0.60" "1152 0.63" "1152 0.58"; do
  set -- $spec; N=$O/s$1-t$2
  [ -f $N.sort.onnx ] || {
    $B prune --task mrpc --target-macs $2 --seq-len $1 --calib-data $D/mrpc/train.tsv $M $N.onnx 2> $N.prune.err
    $B quantize --mode static --static-form ort --task mrpc --calib-data $D/mrpc/train.tsv --unpad \
      $N.onnx $N.sort.onnx 2> $N.q.err
  }
  echo "s$1-t$2 $(acc $N.sort.onnx dev) $(acc $N.sort.onnx train) $($B inspect $N.onnx | grep '^transformer')" >> $O/acc.txt
  models+=($N.sort.onnx)
done
$P "$ROOT/bench/paired_speed.py" --task mrpc --data $D --batch-size 24 --rounds 5 $M "${models[@]}" > $O/paired.txt
cat $O/acc.txt $O/paired.txt
