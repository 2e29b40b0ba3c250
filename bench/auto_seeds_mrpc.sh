#!/usr/bin/env bash
# issue 16: MRPC --max-drop 0.5 with seeds 1 and 2 (seed 0 is /work/auto-level): the choice, selection and dev drops.
set -euo pipefail
B=/work/main/target/release/onnx-compress
export ORT_DYLIB_PATH=/work/main/.ort/lib/libonnxruntime.so.1.32.0
S=/work/shared; O=${O:-/work/auto-seeds}; mkdir -p $O
for seed in 1 2; do
  /usr/bin/time -f "mrpc seed $seed: %e s" $B auto $S/models/minilm-l6-mrpc/model.onnx $O/mrpc-s$seed.onnx --task mrpc --calib-data $S/data/glue/mrpc/train.tsv --seed $seed --max-drop 0.5 --objective speed --time-budget 30m --json > $O/mrpc-s$seed.json 2> $O/mrpc-s$seed.err
done
echo done
