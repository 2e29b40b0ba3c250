#!/bin/sh
# The two fusions of fusions.py on a packed int8 model, as run: each rewrite of MODEL, then FP32,
# MODEL and both rewrites paired on dev (file order).
#   MODEL=/work/auto-groups/mrpc-drop1.onnx T=mrpc BS=24 O=/work/s46 bench/attention_op/fusions.sh
set -eu
T=${T:-mrpc}; BS=${BS:-24}; O=${O:-/work/fusions}
MODEL=${MODEL:?a packed int8 model (ONNX Runtime form)}
S=${SHARED:-../shared}
mkdir -p "$O"
for k in skip-layernorm merge-qkv; do
  python3 bench/attention_op/fusions.py $k "$MODEL" "$O/$k.onnx" | tee "$O/$k.txt"
done
python3 bench/paired_speed.py --task $T --batch-size $BS --rounds 7 --json \
  --tokenizer "$S/models/minilm-l6-$T/tokenizer.json" "$S/models/minilm-l6-$T/model.onnx" \
  "$MODEL" "$O/skip-layernorm.onnx" "$O/merge-qkv.onnx" > "$O/paired-$T.json" 2> "$O/paired-$T.err"
tail -7 "$O/paired-$T.err"
