#!/usr/bin/env python3
"""Analysis (bench/RESULTS.md, "The export matrix"): this tool's dynamic INT8 against ONNX
Runtime's quantize_dynamic on every export-matrix cell, on the 32-example bar batch of
scripts/fixtures/ort_bar_vnni.py (seed 0) and on 512 more (seed 1): the largest relative logit
error (one logit's) and the RMS relative error (every logit's), for ours with the defaults
(int8 tables too) and with --no-embeddings, keeping float the MatMuls quantize_dynamic leaves
float (the cell's ort_float_matmuls) where ours quantizes them. One line per cell.

Needs onnx, onnxruntime==1.32.0 and numpy, a release build (ONNX_COMPRESS, default
target/release/onnx-compress) and a CPU with avx512_vnni for the numbers to mean what the test's
do. Usage: python bench/matrix/dynamic_error.py [CELL ...]
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "../../scripts/fixtures"))
from ort_bar_vnni import bar_batch  # noqa: E402

ROOT = os.path.join(HERE, "../../tests/fixtures/matrix")
BIN = os.environ.get("ONNX_COMPRESS", os.path.join(HERE, "../../target/release/onnx-compress"))


def run(path, b):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(None, {i.name: b[i.name] for i in s.get_inputs()})[0]


def errors(a, x):
    """(largest |a − x| / largest |a|, RMS(a − x) / RMS(a))."""
    return np.abs(a - x).max() / np.abs(a).max(), np.sqrt(((a - x) ** 2).mean() / (a ** 2).mean())


def ours(model, out, extra, exclude):
    args = [BIN, "quantize", "--mode", "dynamic", "-q", model, out] + extra
    # Where ours leaves those MatMuls float already (DeBERTa's constant projections) the
    # exclusion matches nothing and is refused: then without it.
    if subprocess.run(args + sum([["--exclude", n] for n in exclude], []), capture_output=True).returncode:
        subprocess.run(args, check=True, capture_output=True)


def main():
    cells = sys.argv[1:] or sorted(c for c in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, c)))
    batches = [("32", bar_batch(np)), ("512", bar_batch(np, seed=1, n=512))]
    work = tempfile.mkdtemp()
    for cell in cells:
        model = os.path.join(ROOT, cell, "model.onnx")
        with open(os.path.join(ROOT, cell, "expected.json")) as f:
            left = json.load(f).get("vnni_bar", {}).get("ort_float_matmuls", [])
        paths = {k: os.path.join(work, k + ".onnx") for k in ("ort", "ours", "float_tables")}
        quantize_dynamic(model, paths["ort"], weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        ours(model, paths["ours"], [], left)
        ours(model, paths["float_tables"], ["--no-embeddings"], left)
        line = cell
        for name, b in batches:
            f = run(model, b)
            e = {k: errors(f, run(p, b)) for k, p in paths.items()}
            line += (f" | {name}: largest ort {e['ort'][0]:.4f} ours {e['ours'][0]:.4f} float tables "
                     f"{e['float_tables'][0]:.4f}; rms ort {e['ort'][1]:.4f} ours {e['ours'][1]:.4f} "
                     f"float tables {e['float_tables'][1]:.4f}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
