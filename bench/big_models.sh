#!/usr/bin/env bash
# Issue 17 item 5: the passes on a BERT-base-shaped model and on a model over 2 GB.
#
#   bench/big_models.sh WORK [PYTHON]
#
# WORK holds the models bench/big_export.py writes (WORK/bert-base, WORK/xlmr-large; written here
# first when missing) and everything this script writes (WORK/out). PYTHON: a Python with torch,
# transformers, onnx and onnxruntime==1.32.0 (default: python3).
#
# For every pass it records the wall time and the peak resident memory of the whole command
# (GNU time's %M: reading, the pass, the run check, writing) against the size of the input model
# (its .onnx plus external data), prints one Markdown row per command, and keeps the JSON in
# WORK/out/NAME.json (a step whose output and JSON are there already is not rerun: delete them
# to measure it again). Then bench/paired_speed.py times, paired in one process on SST-2 dev
# (file order, batch 32), BERT-base in FP32 against ONNX Runtime's quantizer and optimizer and
# this tool's INT8 and pruned models (random weights: the speed counts, the accuracy does not).
# SPEED=0 skips the speed part. Needs the release build (cargo build --release) and ORT_DYLIB_PATH or the project's .ort/lib.
set -euo pipefail
WORK=${1:?usage: bench/big_models.sh WORK [PYTHON]}
PY=${2:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOL=$ROOT/target/release/onnx-compress
TRAIN=$ROOT/data/glue/sst2/train.tsv
OUT=$WORK/out
mkdir -p "$OUT"
[ -x "$TOOL" ] || { echo "error: $TOOL missing: cargo build --release first" >&2; exit 1; }
[ -f "$WORK/bert-base/model.onnx" ] && [ -f "$WORK/xlmr-large/model.onnx" ] || "$PY" "$ROOT/bench/big_export.py" "$WORK"

size_of() { # bytes of a model and its external data (the files in its folder other than tokenizer.json and outputs)
  local m=$1
  case $m in
    */xlmr-large/model.onnx) du -sb --exclude=tokenizer.json "$(dirname "$m")" | cut -f1 ;;
    *) echo $(( $(stat -c %s "$m") + $( [ -f "$m.data" ] && stat -c %s "$m.data" || echo 0) )) ;;
  esac
}

echo "| model | command | wall s | peak RSS GB | input GB | peak / input | output GB |"
echo "|---|---|---:|---:|---:|---:|---:|"
row() { # the Markdown row of a step's JSON
  "$PY" - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
g = 1e9
out = f"{r['output_bytes'] / g:.2f}" if r["output_bytes"] else "–"
print(f"| {r['name'].split(':')[0]} | `{r['command']}` | {r['wall_s']:.1f} | {r['peak_rss_bytes'] / g:.2f} | "
      f"{r['input_bytes'] / g:.2f} | {r['peak_rss_bytes'] / r['input_bytes']:.2f} | {out} |")
EOF
}
step() { # step NAME INPUT OUTPUT ARGS... (OUTPUT '-' for none)
  local name=$1 in=$2 out=$3; shift 3
  local json="$OUT/$name.json"
  if [ -f "$json" ] && { [ "$out" = - ] || [ -f "$out" ]; }; then row "$json"; return; fi
  local args=("$@" "$in"); [ "$out" != - ] && args+=("$out")
  /usr/bin/time -o "$OUT/time.txt" -f "%e %M" "$TOOL" -q "${args[@]}" > "$OUT/$name.log" 2>&1 \
    || { echo "error: $name failed:" >&2; tail -3 "$OUT/$name.log" >&2; exit 1; }
  read -r wall kb < "$OUT/time.txt"
  local insize outsize=0; insize=$(size_of "$in"); [ "$out" != - ] && outsize=$(size_of "$out")
  "$PY" - "$name" "$wall" "$kb" "$insize" "$outsize" "$*" > "$json" <<'EOF'
import json, sys
name, wall, kb, insize, outsize, cmd = sys.argv[1:]
print(json.dumps({"name": name, "command": cmd, "wall_s": float(wall), "peak_rss_bytes": int(kb) * 1024,
                  "input_bytes": int(insize), "output_bytes": int(outsize)}))
EOF
  row "$json"
}

B=$WORK/bert-base/model.onnx
X=$WORK/xlmr-large/model.onnx
CAL=(--calib-data "$TRAIN" --task sst2)
step "bert-base:inspect" "$B" - inspect
step "bert-base:prune-l1" "$B" "$OUT/b.l1.onnx" prune --heads 0.25 --ffn 0.25
step "bert-base:prune-calibrated" "$B" "$OUT/b.p60.onnx" prune --target-macs 0.6 "${CAL[@]}"
step "bert-base:lowrank-weight" "$B" "$OUT/b.lr.onnx" lowrank --ratio 0.5
step "bert-base:lowrank-aware" "$B" "$OUT/b.lra.onnx" lowrank --ratio 0.5 "${CAL[@]}"
step "bert-base:quantize-dynamic" "$B" "$OUT/b.dyn.onnx" quantize --mode dynamic
step "bert-base:quantize-static-ort" "$B" "$OUT/b.sort.onnx" quantize --mode static --static-form ort "${CAL[@]}"
step "bert-base:quantize-fp16" "$B" "$OUT/b.fp16.onnx" quantize --mode fp16
step "bert-base:p60+dynamic" "$OUT/b.p60.onnx" "$OUT/b.p60.dyn.onnx" quantize --mode dynamic
step "bert-base:p60+static-ort" "$OUT/b.p60.onnx" "$OUT/b.p60.sort.onnx" quantize --mode static --static-form ort "${CAL[@]}"
step "xlmr-large:inspect" "$X" - inspect
step "xlmr-large:quantize-dynamic" "$X" "$OUT/x.dyn.onnx" quantize --mode dynamic
step "xlmr-large:prune-l1" "$X" "$OUT/x.l1.onnx" prune --heads 0.25 --ffn 0.25
step "xlmr-large:prune-l1-ffn05" "$X" "$OUT/x.f05.onnx" prune --ffn 0.05
step "xlmr-large:convert" "$X" "$OUT/x.conv.onnx" convert

[ "${SPEED:-1}" = 0 ] && exit 0
# The peers, made from the same FP32 file: ONNX Runtime's quantize_dynamic (per-tensor, all
# defaults) and its transformer optimizer (fused attention, SkipLayerNorm: what Optimum's -O2 writes).
"$PY" - "$B" "$OUT" <<'EOF'
import sys
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers import optimizer
b, out = sys.argv[1:]
quantize_dynamic(b, f"{out}/b.ort_dynamic.onnx", weight_type=QuantType.QInt8)
optimizer.optimize_model(b, model_type="bert", num_heads=12, hidden_size=768).save_model_to_file(f"{out}/b.ort_opt.onnx")
EOF
"$PY" "$ROOT/bench/paired_speed.py" --task sst2 --tokenizer "$WORK/bert-base/tokenizer.json" --rounds 3 --json \
  "$B" "$OUT/b.ort_opt.onnx" "$OUT/b.ort_dynamic.onnx" "$OUT/b.dyn.onnx" "$OUT/b.sort.onnx" \
  "$OUT/b.p60.dyn.onnx" "$OUT/b.p60.sort.onnx" "$OUT/b.p60.onnx" > "$OUT/speed.json"
"$PY" -c "
import json
d = json.load(open('$OUT/speed.json'))
print(f\"\nSST-2 dev, batch {d['batch_size']}, {d['timed_batches']} timed batches x {d['rounds']} rounds\")
print('| model | samples/s | x FP32 (median) | min–max |')
print('|---|---:|---:|---|')
for m in d['models']:
    print(f\"| {m['model'].rsplit('/', 1)[-1]} | {m['samples_per_s_median']:.1f} | {m['ratio_median']:.2f} | {m['ratio_min']:.2f}–{m['ratio_max']:.2f} |\")"
