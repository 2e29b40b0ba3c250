#!/usr/bin/env python3
"""How close compressed models stay to the FP32 model on held-out training examples.

    python bench/heldout_kl.py TASK MODEL... [--shared ../shared] [--n 2000] [--seed 7]

Draws N random examples of the task's GLUE train.tsv (Python's random with SEED; they may
overlap a pass's calibration draw), runs the shared FP32 model and each MODEL in ONNX Runtime
(2 threads, batch 64, max length 128) and prints, per model, the mean KL divergence of its
predictions from the FP32 model's, the share of predictions unchanged, accuracy on the training
labels and the mean squared logit difference. Needs onnxruntime and tokenizers.
"""
import argparse
import csv
import os
import random
import sys

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

p = argparse.ArgumentParser()
p.add_argument("task", choices=["sst2", "mrpc"])
p.add_argument("models", nargs="+")
# ../shared beside the repository, wherever this is run from.
p.add_argument("--shared", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared"))
p.add_argument("--n", type=int, default=2000)
p.add_argument("--seed", type=int, default=7)
a = p.parse_args()
for m in a.models:
    if not os.path.isfile(m):
        sys.exit(f"error: {m}: no such file")

base = f"{a.shared}/models/minilm-l6-{a.task}"
with open(f"{a.shared}/data/glue/{a.task}/train.tsv", encoding="utf-8-sig") as f:
    rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
random.seed(a.seed)
if not 0 < a.n <= len(rows):
    sys.exit(f"error: --n {a.n}: the training file has {len(rows)} examples")
sample = random.sample(rows, a.n)
tok = Tokenizer.from_file(base + "/tokenizer.json")
tok.enable_truncation(128)
tok.enable_padding()
if a.task == "sst2":
    enc, labels = [tok.encode(r[0]) for r in sample], [int(r[1]) for r in sample]
else:
    enc, labels = [tok.encode(r[3], r[4]) for r in sample], [int(r[0]) for r in sample]


def run(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = {i.name for i in s.get_inputs()}
    out = []
    for i in range(0, len(enc), 64):
        b = enc[i : i + 64]
        width = max(len(e.ids) for e in b)
        pad = lambda xs: np.array([x + [0] * (width - len(x)) for x in xs], dtype=np.int64)
        feed = {
            "input_ids": pad([e.ids for e in b]),
            "attention_mask": pad([e.attention_mask for e in b]),
            "token_type_ids": pad([e.type_ids for e in b]),
        }
        out.append(s.run(None, {k: v for k, v in feed.items() if k in names})[0])
    return np.concatenate(out)


def log_softmax(x):
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


teacher = run(base + "/model.onnx")
lt = log_softmax(teacher)
y = np.array(labels)
print(f"{a.task}: {a.n} training examples (seed {a.seed}); FP32 accuracy on them {np.mean(teacher.argmax(1) == y):.4f}")
for m in a.models:
    s = run(m)
    kl = np.mean((np.exp(lt) * (lt - log_softmax(s))).sum(1))
    same = np.mean(s.argmax(1) == teacher.argmax(1))
    acc = np.mean(s.argmax(1) == y)
    print(f"{m}: KL {kl:.5f}  unchanged {same:.4f}  accuracy {acc:.4f}  mse {np.mean((s - teacher) ** 2):.4f}")
