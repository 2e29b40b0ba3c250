#!/usr/bin/env bash
# issue 16: MRPC --max-drop 0.5 with seeds 1 and 2 (seed 0 is bench/attention_op/auto.sh's run):
# the choice, selection and dev drops. O: output folder (default bench/out/auto-seeds);
# ONNX_COMPRESS, SHARED as in bench/attention_op/auto.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${ONNX_COMPRESS:-$ROOT/target/release/onnx-compress}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$ROOT/.ort/lib/libonnxruntime.so.1.32.0}
S=${SHARED:-$ROOT/../shared}; O=${O:-$ROOT/bench/out/auto-seeds}; mkdir -p $O
for seed in 1 2; do
  /usr/bin/time -f "mrpc seed $seed: %e s" $B auto $S/models/minilm-l6-mrpc/model.onnx $O/mrpc-s$seed.onnx --task mrpc --calib-data $S/data/glue/mrpc/train.tsv --seed $seed --max-drop 0.5 --objective speed --time-budget 30m --json > $O/mrpc-s$seed.json 2> $O/mrpc-s$seed.err
done
echo done
