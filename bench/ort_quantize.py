#!/usr/bin/env python3
"""ONNX Runtime's own quantizers on a shared model, for side-by-side rows in quantize_table.py.

  python3 bench/ort_quantize.py --task sst2 --model M/model.onnx --out-dir bench/out [--calib-samples 256]
      [--calib-method minmax|entropy|percentile]

Writes <out-dir>/<task>-ort_dynamic.onnx and <task>-ort_static.onnx (another --calib-method:
<task>-ort_static_<method>.onnx; its histogram methods need every calibration batch padded to
128 tokens) and prints JSON with the time each quantizer took.

- ort_dynamic: `quantize_dynamic(weight_type=QInt8)`, all defaults (per-tensor weights, every
  supported op: MatMul, Gather, ...): the reference experiment's `onnx` method.
- ort_static: `quantize_static` in QDQ format with the settings ORT recommends for transformers on
  VNNI CPUs: per-channel s8 weights, u8 activations, MinMax calibration, MatMul only (its default
  op list also quantizes Add/Gather etc.; that lost 18 points on SST-2 here). Calibration: the
  same number of training examples as `onnx-compress quantize --calib-samples`, drawn with
  Python's `random.Random(0)`, batches of 32 padded to their longest member.
"""
import argparse
import json
import os
import random
import sys
import time

import numpy as np
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from python_eval import TASKS, read_tsv  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", required=True, choices=sorted(TASKS))
    ap.add_argument("--model", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--data", default=None)
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--calib-method", default="minmax", choices=["minmax", "entropy", "percentile"])
    a = ap.parse_args()
    tok_path = os.path.join(os.path.dirname(a.model), "tokenizer.json")
    for f in (a.model, tok_path):
        if not os.path.isfile(f):
            sys.exit(f"error: {f}: no such file" + ("" if f == a.model else " (the tokenizer is read from beside the model)"))
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)

    here = os.path.dirname(os.path.abspath(__file__))
    data = a.data or os.path.normpath(os.path.join(here, "..", "..", "shared", "data", "glue"))
    sub, label_col, text_cols = TASKS[a.task]
    _, texts = read_tsv(os.path.join(data, sub, "train.tsv"), label_col, text_cols)
    pick = sorted(random.Random(0).sample(range(len(texts)), min(a.calib_samples, len(texts))))
    tok = Tokenizer.from_file(tok_path)
    tok.enable_truncation(128)
    tok.no_padding()
    chosen = [texts[i] for i in pick]
    enc = tok.encode_batch(chosen if isinstance(chosen[0], str) else [tuple(t) for t in chosen])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(enc):
                return None
            ch = enc[self.i:self.i + 32]
            self.i += 32
            # Its histogram collectors (entropy, percentile) stack every batch's values into one
            # array: every batch is padded to 128 tokens then (the padding's values counted).
            n = max(len(e.ids) for e in ch) if a.calib_method == "minmax" else 128
            ids = np.zeros((len(ch), n), np.int64)
            am = np.zeros_like(ids)
            tt = np.zeros_like(ids)
            for j, e in enumerate(ch):
                ids[j, :len(e.ids)] = e.ids
                am[j, :len(e.ids)] = 1
                tt[j, :len(e.ids)] = e.type_ids
            return {"input_ids": ids, "attention_mask": am, "token_type_ids": tt}

    os.makedirs(a.out_dir, exist_ok=True)
    out = {}
    dyn = os.path.join(a.out_dir, f"{a.task}-ort_dynamic.onnx")
    t = time.perf_counter()
    quantize_dynamic(a.model, dyn, weight_type=QuantType.QInt8)
    out["ort_dynamic"] = {"path": dyn, "seconds": time.perf_counter() - t}
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[a.calib_method]
    suffix = "" if a.calib_method == "minmax" else "_" + a.calib_method
    st = os.path.join(a.out_dir, f"{a.task}-ort_static{suffix}.onnx")
    t = time.perf_counter()
    quantize_static(a.model, st, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul"], calibrate_method=method)
    out["ort_static"] = {"path": st, "seconds": time.perf_counter() - t, "calib_samples": len(enc)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
