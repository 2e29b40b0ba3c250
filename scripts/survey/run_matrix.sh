#!/usr/bin/env bash
# The export matrix: every family × attention × exporter of scripts/survey/export_matrix.py,
# optionally ONNX Runtime's transformer optimizer on the Optimum export, each model then through
# inspect, prune (heads, FFN), lowrank and quantize (dynamic, fp16) of the built binary. One row per
# model; "ok" or "FAIL(last line of the error)" per command. Exports are kept in OUT and reused.
#
# Usage: [FAMILIES="bert modernbert"] PY=/path/to/venv/bin/python scripts/survey/run_matrix.sh OUT [EXPORTERS]
#   EXPORTERS: any of "classic dynamo optimum ortopt" (default: classic dynamo)
# Needs: the release build, ORT_DYLIB_PATH (or .ort/), a venv with torch and transformers (and
# optimum-onnx for optimum/ortopt).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$here/../../target/release/onnx-compress"
out="${1:?usage: run_matrix.sh OUT [EXPORTERS]}"
exporters="${2:-classic dynamo}"
PY="${PY:-python3}"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$here/../../.ort/lib/libonnxruntime.so.1.32.0}"
mkdir -p "$out" && cd "$out" || exit 1
check() {  # model, row label
  local line="$2" o
  for a in "inspect" "prune --heads 0.5" "prune --ffn 0.5" "lowrank --rank 4" "quantize --mode dynamic" "quantize --mode fp16"; do
    if [ "$a" = inspect ]; then o=$("$bin" inspect "./$1" 2>&1); else o=$("$bin" $a "./$1" ./out.onnx 2>&1); fi
    if [ $? = 0 ]; then line="$line | $a: ok"; else line="$line | $a: FAIL($(echo "$o" | tail -1 | cut -c1-220))"; fi
  done
  echo "$line"
}
for fam in ${FAMILIES:-bert roberta xlm-roberta distilbert electra electra-equal albert mpnet deberta-v3 modernbert}; do
  for ex in $exporters; do
    [ "$ex" = ortopt ] && continue
    attns="sdpa eager"; [ "$ex" = optimum ] && attns="eager"
    for attn in $attns; do
      f="${fam}_${attn}_${ex}.onnx"
      r=cached
      [ -f "$f" ] || r=$(timeout 600 "$PY" "$here/export_matrix.py" "$fam" "$attn" "$ex" "$f" 2>&1 | grep -E "EXPORTED|CONFIG-FAIL|Error" | tail -1)
      if [ -f "$f" ]; then check "$f" "$fam $attn $ex"; else echo "$fam $attn $ex | export: ${r:0:150}"; fi
      if [ "$ex" = optimum ] && [ -f "$f" ] && [[ " $exporters " == *" ortopt "* ]]; then
        g="${fam}_${attn}_ortopt.onnx"
        [ -f "$g" ] || "$PY" -c "from onnxruntime.transformers.optimizer import optimize_model as o; o('$f', model_type='bert', num_heads=0, hidden_size=0).save_model_to_file('$g')" > /dev/null 2>&1
        if [ -f "$g" ]; then check "$g" "$fam $attn optimum+ortopt"; else echo "$fam $attn optimum+ortopt | optimizer failed"; fi
      fi
    done
  done
done
