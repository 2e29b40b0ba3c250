#!/usr/bin/env python3
"""How well does a drop measured on training examples predict the drop on dev? (issue 16)

For a base model and compressed candidates: accuracy on N training examples (a seeded random
draw) and on dev, each candidate's paired drop against the base on the first 1024 and on all N
training examples, its standard error and its upper bounds at 90% and 95% confidence, beside its
dev drop and the share of dev predictions that flip. What `auto` chooses on is the training side;
this shows how far that reads dev.

  python3 bench/selection_vs_dev.py --task sst2 BASE.onnx CAND.onnx [CAND.onnx ...] [--n 4096]

The candidates used in bench/RESULTS.md ("auto") were built with this tool:
  onnx-compress prune --target-macs F --calib-data TRAIN --task T BASE P_F.onnx   (F: 0.8 … 0.43)
  onnx-compress quantize --mode dynamic P_F.onnx P_F_dyn.onnx
  onnx-compress quantize --mode dynamic|static [--calib-data TRAIN --task T] BASE dyn.onnx|static.onnx
Batches: 32 examples in draw order, padded to the longest (bench/python_eval.py's batches).
"""
import argparse
import math
import os
import random
import sys

import numpy as np
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paired_speed import session  # noqa: E402
from python_eval import TASKS, default_data_dir, make_batches, read_tsv  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", required=True, choices=sorted(TASKS))
    ap.add_argument("models", nargs="+", help="the base model first, then the candidates")
    ap.add_argument("--data", default=default_data_dir())
    ap.add_argument("--n", type=int, default=4096, help="training examples drawn (all when fewer)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    tok_path = os.path.join(os.path.dirname(a.models[0]), "tokenizer.json")
    for f in a.models + [tok_path]:
        if not os.path.isfile(f):
            sys.exit(f"error: {f}: no such file" + ("" if f in a.models else " (the tokenizer is read from beside the base model)"))
    folder, label_col, text_cols = TASKS[a.task]
    tok = Tokenizer.from_file(tok_path)
    tok.enable_truncation(128)
    tr_labels, tr_texts = read_tsv(os.path.join(a.data, folder, "train.tsv"), label_col, text_cols)
    dev_labels, dev_texts = read_tsv(os.path.join(a.data, folder, "dev.tsv"), label_col, text_cols)
    idx = list(range(len(tr_texts)))
    random.Random(a.seed).shuffle(idx)
    idx = idx[: a.n]
    parts = {
        "sel": ([tr_texts[i] for i in idx], np.array([tr_labels[i] for i in idx])),
        "dev": (dev_texts, np.array(dev_labels)),
    }
    preds = {}
    for path in a.models:
        s = session(path, 0, False)
        names = [i.name for i in s.get_inputs()]
        for part, (texts, _) in parts.items():
            out = [s.run(None, feed)[0] for feed, _ in make_batches(tok, texts, 32, names, np)]
            preds[path, part] = np.concatenate(out).argmax(1)
    base = a.models[0]
    right = {k: v == parts[k[1]][1] for k, v in preds.items()}
    print(f"base: training draw {right[base, 'sel'].mean():.4f} ({len(idx)} examples), dev {right[base, 'dev'].mean():.4f}")
    for n in sorted({min(1024, len(idx)), len(idx)}):
        print(f"\nfirst {n} training examples (points; bound = drop + z·SE)")
        print("| candidate | drop | SE | bound 90% | bound 95% | dev drop | dev flips % |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for c in a.models[1:]:
            diff = right[base, "sel"][:n].astype(float) - right[c, "sel"][:n].astype(float)
            drop, se = diff.mean() * 100, diff.std(ddof=1) / math.sqrt(n) * 100
            dev_drop = (right[base, "dev"].mean() - right[c, "dev"].mean()) * 100
            flips = (preds[c, "dev"] != preds[base, "dev"]).mean() * 100
            name = os.path.basename(c)[: -len(".onnx")]
            print(f"| {name} | {drop:.2f} | {se:.2f} | {drop + 1.2816 * se:.2f} | {drop + 1.6449 * se:.2f} | {dev_drop:.2f} | {flips:.2f} |")


if __name__ == "__main__":
    main()
