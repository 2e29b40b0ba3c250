#!/usr/bin/env bash
# Low-rank benchmark on the shared MiniLM-L6 models (SST-2 and MRPC dev): accuracy, parameters,
# pass time and throughput of the reference-parity row and the activation-aware rows, next to
# FP32; plus the whole-model factorization time without calibration.
#
#   bench/lowrank_table.sh [REPEATS (3)] [THREADS (2)] [TASKS ("sst2 mrpc")]
#
# Accuracy: `onnx-compress eval` with the reference's settings (batch 32 / MRPC 24).
# Throughput: batch 32, dynamic padding, 3 warm-up batches then every batch timed; the factorized
# model and the FP32 model are run alternately REPEATS times and the median ratio is reported
# (on a shared machine single timings drift; interleaving cancels most of it).
# Needs target/release/onnx-compress, jq, and ../shared. Prints Markdown rows; keeps JSON reports
# in bench/out/lowrank_*.json.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/target/release/onnx-compress"
SHARED="$ROOT/../shared"
OUT="$ROOT/bench/out"
REPEATS="${1:-3}"
THREADS="${2:-2}"
TASKS="${3:-sst2 mrpc}"
mkdir -p "$OUT"

acc() {
  "$BIN" eval --task "$1" --model "$2" --threads "$THREADS" --json |
    jq -r '"\(.metrics.accuracy) \(.metrics.f1)"' | awk '{printf "%.4f %.4f\n", $1, $2}'
}
sps() {
  "$BIN" eval --task "$1" --model "$2" --threads "$THREADS" --batch-size 32 --warmup 3 --measure 1000 --json |
    jq -r '.timing.samples_per_s'
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"

# Whole-model factorization without calibration: every Linear, energy 0.9, best of 3.
M="$SHARED/models/minilm-l6-sst2/model.onnx"
best=""
for _ in 1 2 3; do
  s=$("$BIN" lowrank --energy 0.9 --apply-to all_linear --force "$M" "$OUT/whole.onnx" --json | jq -r '.seconds')
  best=$(printf '%s\n%s\n' "$s" "${best:-$s}" | sort -g | head -1)
done
rm -f "$OUT/whole.onnx"
echo "whole-model factorization (38 Linears, --energy 0.9 --apply-to all_linear --force): pass time ${best} s (best of 3)"

for task in $TASKS; do
  base="$SHARED/models/minilm-l6-$task/model.onnx"
  train="$SHARED/data/glue/$task/train.tsv"
  read -r a0 f0 < <(acc "$task" "$base")
  echo
  echo "### $task"
  echo "| row | accuracy | Δ points | F1 | encoder Linear params | model params | encoder MACs | throughput × FP32 | pass time | ranks |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  echo "| FP32 | $a0 | +0.00 | $f0 | 100% | 100% | 100% | 1.00 |  |  |"
  rows=(
    "parity: denoise gavish_donoho, energy 0.995, k_min 192, ffn_only, layers 4,5|--denoise --shrink gavish_donoho --energy 0.995 --k-min 192 --apply-to ffn_only --layers 4,5"
    "aware: target params 0.69, layers 1-5|--calib-data $train --calib-samples 512 --target-params 0.69 --layers 1,2,3,4,5"
    "aware: target params 0.75, all layers|--calib-data $train --calib-samples 512 --target-params 0.75"
  )
  for row in "${rows[@]}"; do
    name="${row%%|*}"
    read -r -a args <<<"${row#*|}"
    out="$OUT/lowrank_${task}.onnx"
    rep="$OUT/lowrank_${task}_$(echo "$name" | tr -c 'a-z0-9' '_').json"
    "$BIN" lowrank "${args[@]}" --json "$base" "$out" >"$rep"
    read -r a f < <(acc "$task" "$out")
    ratios=()
    for _ in $(seq "$REPEATS"); do
      b=$(sps "$task" "$base")
      c=$(sps "$task" "$out")
      ratios+=("$(echo "$c / $b" | bc -l)")
    done
    speed=$(printf '%s\n' "${ratios[@]}" | median)
    jq -r --arg name "$name" --arg a "$a" --arg f "$f" --arg a0 "$a0" --arg speed "$speed" '
      "| \($name) | \($a) | \((($a|tonumber) - ($a0|tonumber)) * 100 | . * 100 | round / 100) | \($f) | " +
      "\(.encoder_linear_params_after / .encoder_linear_params_before * 1000 | round / 10)% | " +
      "\(.params_after / .params_before * 1000 | round / 10)% | " +
      "\(.encoder_macs_after / .encoder_macs_before * 1000 | round / 10)% | " +
      "\($speed | tonumber * 100 | round / 100) | \(.seconds * 10 | round / 10) s | " +
      "\([.layers[] | select(.factorized) | "\(.name | sub("layer "; "L")) \(.rank)"] | join(", ")) |"' "$rep"
    rm -f "$out"
  done
done
