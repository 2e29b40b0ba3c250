#!/usr/bin/env bash
# The export matrix as a survey: every family × attention × exporter cell of
# scripts/fixtures/export_matrix.py exported into OUT (cells already there are reused), then each
# model through inspect, prune (heads, FFN), lowrank and quantize (dynamic, fp16) of the built
# binary. One row per cell; "ok" or "FAIL(last line of the error)" per command.
#
# Usage: [FAMILIES="bert modernbert"] PY=/path/to/venv/bin/python scripts/survey/run_matrix.sh OUT [EXPORTERS]
#   EXPORTERS: any of "classic dynamo optimum ortopt" (default: classic dynamo)
# Needs: the release build, ORT_DYLIB_PATH (or .ort/), a venv with torch and transformers (and
# optimum-onnx for optimum/ortopt, onnxscript for dynamo).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$here/../../target/release/onnx-compress"
out="${1:?usage: run_matrix.sh OUT [EXPORTERS]}"
exporters="${2:-classic dynamo}"
PY="${PY:-python3}"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$here/../../.ort/lib/libonnxruntime.so.1.32.0}"
mkdir -p "$out" || exit 1
families=(${FAMILIES:-})
"$PY" "$here/../fixtures/export_matrix.py" "$out" ${FAMILIES:+--families "${families[@]}"} \
  --exporters $exporters > "$out/export.log" 2>&1 || echo "export: see $out/export.log"
for cell in "$out"/t*-*/; do
  m="$cell/model.onnx"
  line="$(basename "$cell")"
  for a in "inspect" "prune --heads 0.5" "prune --ffn 0.5" "lowrank --rank 4" "quantize --mode dynamic" "quantize --mode fp16"; do
    if [ "$a" = inspect ]; then o=$("$bin" inspect "$m" 2>&1); else o=$("$bin" $a "$m" "$out/out.onnx" 2>&1); fi
    if [ $? = 0 ]; then line="$line | $a: ok"; else line="$line | $a: FAIL($(echo "$o" | tail -1 | cut -c1-220))"; fi
  done
  echo "$line"
done
