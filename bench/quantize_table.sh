#!/usr/bin/env bash
# Quantization benchmark (one command): builds the release binary, quantizes the shared MiniLM-L6
# SST-2 and MRPC models in every mode, runs ONNX Runtime's own Python quantize_dynamic and
# quantize_static on the same models, and prints accuracy / F1 / size / throughput × FP32 / pass
# time per task (see bench/quantize_table.py). Needs ../shared, Python with onnxruntime==1.32.0,
# onnx, tokenizers, numpy. About 8 minutes on a quiet 2-core machine.
#
#   bench/quantize_table.sh [--tasks sst2 mrpc] [--repeats 7] [--calib-samples 256]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
python3 bench/quantize_table.py "$@"
