#!/usr/bin/env bash
# FP32 eval throughput: the Rust tool against a Python onnxruntime loop over the same batches
# (bench/python_eval.py), same model, same threads, runs interleaved so that machine drift
# hits both alike. Prints one line per run and the medians; paste them into bench/RESULTS.md.
#
#   bench/eval_vs_python.sh [RUNS=5] [THREADS=2] [WARMUP=10] [MEASURE=50]
# (WARMUP=3 MEASURE=1000 times every batch after the third: more samples, less noise.)
# Needs: make setup; pip install -r bench/requirements.txt
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
THREADS=${2:-2}
WARMUP=${3:-10}
MEASURE=${4:-50}
BIN=target/release/onnx-compress
SHARED=${SHARED:-../shared}
OUT=bench/out
mkdir -p "$OUT"
for task in sst2 mrpc; do
  model="$SHARED/models/minilm-l6-$task/model.onnx"
  for i in $(seq "$RUNS"); do
    "$BIN" eval --task "$task" --model "$model" --threads "$THREADS" --warmup "$WARMUP" --measure "$MEASURE" --json > "$OUT/rust-$task-$i.json"
    python3 bench/python_eval.py --task "$task" --model "$model" --threads "$THREADS" --warmup "$WARMUP" --measure "$MEASURE" --json > "$OUT/python-$task-$i.json"
  done
done
python3 - "$OUT" "$RUNS" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
for task in ["sst2", "mrpc"]:
    rows = {}
    for who in ["rust", "python"]:
        rs = [json.load(open(f"{out}/{who}-{task}-{i}.json")) for i in range(1, runs + 1)]
        if who == "rust":
            sps = [r["timing"]["samples_per_s"] for r in rs]
            ms = [r["timing"]["ms_per_batch"] for r in rs]
            tok = [r["tokenize_seconds"] / r["forward_seconds"] for r in rs]
            acc = rs[0]["metrics"]["accuracy"]
        else:
            sps = [r["samples_per_s"] for r in rs]
            ms = [r["ms_per_batch"] for r in rs]
            tok = [r["tokenize_s"] for r in rs]
            acc = rs[0]["accuracy"]
        rows[who] = (statistics.median(sps), statistics.median(ms), sps, acc, statistics.median(tok))
        print(f"{task} {who:6s} acc {acc:.4f}  median {rows[who][0]:.1f} samples/s  {rows[who][1]:.1f} ms/batch  runs {[round(x, 1) for x in sps]}")
    print(f"{task} rust/python throughput ratio {rows['rust'][0] / rows['python'][0]:.3f}; rust tokenize+batch = {100 * rows['rust'][4]:.2f}% of forward time")
PY
