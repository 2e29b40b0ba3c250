#!/usr/bin/env bash
# Issue 17 item 1 with the defaults: `prune --target-macs T` and nothing else (the CLI picks the
# FFN share and calibration size by T's depth), timed, then `eval` on dev. Run from the repository
# root after `make setup`; SHARED points at the shared folder (default ../shared), OUT at the
# folder the models and eval JSON go to (default bench/out/depth-defaults, ignored by git),
# ONNX_COMPRESS at the binary (default the release build).
set -euo pipefail
B=${ONNX_COMPRESS:-target/release/onnx-compress}
S=${SHARED:-../shared}; O=${OUT:-bench/out/depth-defaults}; mkdir -p "$O"
for t in sst2 mrpc; do for m in 0.5 0.4; do
  /usr/bin/time -f "$t $m prune: %e s, %M KB" $B prune --quiet --target-macs $m \
    --calib-data $S/data/glue/$t/train.tsv $S/models/minilm-l6-$t/model.onnx "$O/$t.$m.onnx"
  $B eval --json --task $t --data $S/data/glue --model "$O/$t.$m.onnx" > "$O/$t.$m.eval.json"
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print('$t $m accuracy', r['metrics']['accuracy'])" "$O/$t.$m.eval.json"
done; done
