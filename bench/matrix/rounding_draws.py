#!/usr/bin/env python3
"""Analysis (bench/RESULTS.md, "The export matrix"): how lucky is one rounding of a fixture's
weights? On one export-matrix cell, every MatMul weight (a 2-D initializer) is replaced in float
by (a) its int8 rounding, one scale per output column, (b) per tensor, and (c) 20 random
perturbations of the same size (uniform within half a step of each, per column / per tensor;
a weight stored twice with the same values perturbed the same way twice, as it rounds); activations
stay float. Prints the RMS relative logit error of each on 512 random sequences
(ort_bar_vnni.py's bar_batch, seed 1): where (a) lies among (c) says whether the cell's
per-channel rounding is a typical draw.

Needs onnx, onnxruntime, numpy. Usage: python bench/matrix/rounding_draws.py CELL
(e.g. t4-dynamo-eager-albert)
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper as nh

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "../../scripts/fixtures"))
from ort_bar_vnni import bar_batch  # noqa: E402

ROOT = os.path.join(HERE, "../../tests/fixtures/matrix")


def main():
    m = onnx.load(os.path.join(ROOT, sys.argv[1], "model.onnx"))
    b = bar_batch(np, seed=1, n=512)
    inits = {i.name: i for i in m.graph.initializer}
    names = sorted({n.input[1] for n in m.graph.node
                    if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2})
    orig = {k: nh.to_array(inits[k]).copy() for k in names}

    def run():
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return s.run(None, {i.name: b[i.name] for i in s.get_inputs()})[0]

    # Weights stored twice with the same values (the dynamo export of ALBERT's shared layer) round
    # the same way: each draw perturbs them the same way too.
    first = {}
    for k in names:
        first.setdefault(orig[k].tobytes(), k)

    def with_weights(f, rng=None):
        new = {k: f(orig[k], rng) for k in names if first[orig[k].tobytes()] == k}
        for k in names:
            inits[k].CopyFrom(nh.from_array(new[first[orig[k].tobytes()]].astype(np.float32), k))
        out = run()
        return float(np.sqrt(((base - out) ** 2).mean() / (base ** 2).mean()))

    def step(w, per_channel):
        return (np.abs(w).max(0, keepdims=True) if per_channel else np.abs(w).max()) / 127

    base = run()
    print(f"{sys.argv[1]}: {len(names)} MatMul weights; RMS relative logit error on 512 examples, activations float")
    for per_channel, what in ((True, "per output column"), (False, "per tensor")):
        rounded = with_weights(lambda w, _: np.round(w / step(w, per_channel)) * step(w, per_channel))
        draws = [with_weights(lambda w, r: w + (r.random(w.shape) - 0.5) * step(w, per_channel),
                              np.random.default_rng(s)) for s in range(20)]
        above = sum(d > rounded for d in draws)
        print(f"  {what}: int8 rounding {rounded:.4f}; 20 random perturbations of its step: median "
              f"{np.median(draws):.4f} ({min(draws):.4f}-{max(draws):.4f}), {above} of 20 above the rounding")


if __name__ == "__main__":
    main()
