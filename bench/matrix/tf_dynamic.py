#!/usr/bin/env python3
"""Analysis (bench/RESULTS.md, "Stop 66"): dynamic INT8 of the tf2onnx fixture (tests/fixtures/
tf-bert) against ONNX Runtime's quantize_dynamic, on 32 random sequences of 14 tokens (seed 1):
the RMS relative logit error and argmax agreement of ORT's per-tensor and per-channel s8, and of
this tool's default (s8 per channel) and --weight-type u8.

Needs onnxruntime==1.32.0, numpy and a release build (ONNX_COMPRESS, default
target/release/onnx-compress; ORT_DYLIB_PATH set for it). Usage: python bench/matrix/tf_dynamic.py
"""
import os
import subprocess
import tempfile

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../..")
BIN = os.environ.get("ONNX_COMPRESS", os.path.join(ROOT, "target/release/onnx-compress"))
SOURCE = os.path.join(ROOT, "tests/fixtures/tf-bert/model.onnx")


def main():
    rng = np.random.default_rng(1)
    ids = rng.integers(4, 100, (32, 14)).astype(np.int32)
    ids[:, 0] = 2
    mask = np.ones_like(ids)
    mask[5, 9:] = 0
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    def run(path):
        return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feed)[0]

    base = run(SOURCE)
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for name, per_channel in [("quantize_dynamic s8 per tensor", False), ("quantize_dynamic s8 per channel", True)]:
            models[name] = os.path.join(tmp, f"{per_channel}.onnx")
            quantize_dynamic(SOURCE, models[name], weight_type=QuantType.QInt8, per_channel=per_channel)
        for name, extra in [("ours, default (s8 per channel)", []), ("ours, --weight-type u8", ["--weight-type", "u8"])]:
            models[name] = os.path.join(tmp, f"ours{len(extra)}.onnx")
            subprocess.run([BIN, "quantize", "--mode", "dynamic", *extra, SOURCE, models[name]], check=True, capture_output=True)
        for name, path in models.items():
            got = run(path)
            rms = float(np.sqrt(((got - base) ** 2).mean() / (base**2).mean()))
            agree = float((got.argmax(1) == base.argmax(1)).mean())
            print(f"{name:34} RMS relative error {rms:.4f}, argmax agreement {agree:.3f}")


if __name__ == "__main__":
    main()
