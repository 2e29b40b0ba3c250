#!/bin/sh
# Two length groups for the attention of packed models (src/passes/quantize/groups.rs), as run:
# the same pruned float models quantized (static INT8, ONNX Runtime's form, --unpad) by the
# release build before the change (BEFORE) and after it (AFTER), their dev logits compared, then
# paired on dev with FP32: file order (the benchmark's batches), sorted by length (as `eval
# --bucket`), and MRPC one example at a time.
#   BEFORE=/path/to/old/onnx-compress O=/work/groups-bench bench/attention_op/groups.sh
set -eu
O=${O:-/work/groups-bench}
BEFORE=${BEFORE:?the release binary of the build before the change}
AFTER=${AFTER:-target/release/onnx-compress}
S=${SHARED:-../shared}
mkdir -p "$O"
for T in sst2 mrpc; do
  M=$S/models/minilm-l6-$T/model.onnx
  TRAIN=$S/data/glue/$T/train.tsv
  if [ $T = sst2 ]; then BS=32; F=0.6; else BS=24; F=0.63; fi
  P=$O/$T.p$F.onnx
  [ -f "$P" ] || "$AFTER" prune --task $T --target-macs $F --calib-data "$TRAIN" "$M" "$P" 2> "$O/$T.prune.err"
  for b in before after; do
    if [ $b = before ]; then X=$BEFORE; else X=$AFTER; fi
    "$X" quantize --mode static --static-form ort --task $T --calib-data "$TRAIN" --unpad "$P" "$O/$T.$b.onnx" \
      --json > "$O/$T.$b.json" 2> "$O/$T.$b.err"
  done
  python3 bench/packed/cmp.py "$O/$T.before.onnx" "$O/$T.after.onnx" $T 2> /dev/null | tee "$O/$T.cmp.txt"
  python3 bench/paired_speed.py --task $T --batch-size $BS --rounds 7 --json "$M" "$O/$T.before.onnx" "$O/$T.after.onnx" \
    > "$O/paired-$T.json" 2> "$O/paired-$T.err"
  python3 bench/paired_speed.py --task $T --batch-size $BS --rounds 5 --by-length --json "$M" "$O/$T.before.onnx" \
    "$O/$T.after.onnx" > "$O/paired-$T-by-length.json" 2> "$O/paired-$T-by-length.err"
done
python3 bench/paired_speed.py --task mrpc --batch-size 1 --rounds 3 --json "$S/models/minilm-l6-mrpc/model.onnx" \
  "$O/mrpc.before.onnx" "$O/mrpc.after.onnx" > "$O/paired-mrpc-batch1.json" 2> "$O/paired-mrpc-batch1.err"
python3 - "$O" <<'EOF'
import json, statistics, sys, glob, os
for f in sorted(glob.glob(os.path.join(sys.argv[1], "paired-*.json"))):
    j = json.load(open(f))
    fp, before, after = j["models"]
    per_round = [a / b for a, b in zip(after["ratios"], before["ratios"])]
    print(f"{os.path.basename(f)}: batch {j['batch_size']}, by length {j.get('by_length', False)}: "
          f"x FP32 before {before['ratio_median']:.2f} ({before['ratio_min']:.2f}-{before['ratio_max']:.2f}), "
          f"after {after['ratio_median']:.2f} ({after['ratio_min']:.2f}-{after['ratio_max']:.2f}); "
          f"after / before per round {statistics.median(per_round):.3f} ({min(per_round):.3f}-{max(per_round):.3f})")
EOF
