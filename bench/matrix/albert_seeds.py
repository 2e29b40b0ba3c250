#!/usr/bin/env python3
"""Analysis (bench/RESULTS.md, "The export matrix"): is dynamic INT8's error on the ALBERT
fixture a property of the method or of that one draw of random weights? For seeds 0..N-1 it
builds the export matrix's ALBERT (and, as a control, BERT) classifier with the fixture's config
and random-vector rule under torch.manual_seed(seed), exports it with torch's dynamo exporter
(eager attention; seed 0 is tests/fixtures/matrix/t5-dynamo-eager-FAMILY), and measures on 512
random sequences (ort_bar_vnni.py's bar_batch, seed 1) the RMS relative logit error of ONNX
Runtime's quantize_dynamic (per tensor, s8) and of this tool's dynamic INT8 (the default: per
channel; and --per-tensor). One line per model, then the counts.

Needs torch, transformers, onnxscript, onnx, onnxruntime==1.32.0, numpy, a release build
(ONNX_COMPRESS, default target/release/onnx-compress) and, for the numbers to mean what the
matrix test's do, a CPU with avx512_vnni. Usage: python bench/matrix/albert_seeds.py [N] [FAMILY ...]
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "../../scripts/fixtures"))
import _fixture as fx  # noqa: E402
from export_matrix import build, randomize_vectors  # noqa: E402
from ort_bar_vnni import bar_batch  # noqa: E402
from dynamic_error import BIN, errors, run  # noqa: E402


def rms(a, x):
    return float(errors(a, x)[1])


def main():
    import torch
    import transformers as T

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    families = sys.argv[2:] or ["albert", "bert"]
    b = bar_batch(np, seed=1, n=512)
    work = tempfile.mkdtemp()
    for family in families:
        wins = {"ours": 0, "per_tensor": 0}
        ratios = []
        for seed in range(n):
            torch.manual_seed(seed)
            model, k = build(T, family, "eager")
            model = model.eval()
            randomize_vectors(model, torch)
            path = os.path.join(work, "model.onnx")
            with torch.no_grad():
                fx.export_dynamo(model, path, torch, names=fx.NAMES[:k])
            quantize_dynamic(path, os.path.join(work, "ort.onnx"), weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            for name, extra in (("ours", []), ("per_tensor", ["--per-tensor"])):
                subprocess.run([BIN, "quantize", "--mode", "dynamic", "-q", path, os.path.join(work, name + ".onnx")]
                               + extra, check=True, capture_output=True)
            f = run(path, b)
            e = {k: rms(f, run(os.path.join(work, k + ".onnx"), b)) for k in ("ort", "ours", "per_tensor")}
            for k in wins:
                wins[k] += e[k] <= e["ort"]
            ratios.append(e["ours"] / e["ort"])
            print(f"{family} seed {seed}: RMS relative error, 512 examples: quantize_dynamic {e['ort']:.4f}, "
                  f"ours {e['ours']:.4f}, ours --per-tensor {e['per_tensor']:.4f}", flush=True)
        print(f"{family}: ours no worse than quantize_dynamic on {wins['ours']} of {n} seeds "
              f"(--per-tensor {wins['per_tensor']}); ours / theirs: geometric mean "
              f"{np.exp(np.mean(np.log(ratios))):.2f}, worst {max(ratios):.2f}", flush=True)


if __name__ == "__main__":
    main()
