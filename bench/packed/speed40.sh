#!/usr/bin/env bash
# MRPC: prune 40% (1024 calibration examples, cap 0.98) + static INT8 --unpad (packed) against the 50% model and the peer.
set -euo pipefail
export ORT_DYLIB_PATH=/work/main/.ort/lib/libonnxruntime.so.1.32.0
cd /work/packed
/work/venv-bench/bin/python /work/main/bench/paired_speed.py --task mrpc --batch-size 24 --rounds 7 --json \
  /work/shared/models/minilm-l6-mrpc/model.onnx /work/vnni/mrpc-ort_dynamic.onnx mrpc.p50.packed.onnx mrpc.p40.packed.onnx > paired-mrpc40.json 2> paired-mrpc40.err
