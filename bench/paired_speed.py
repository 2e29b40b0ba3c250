#!/usr/bin/env python3
"""Throughput of models against a baseline, run side by side in one process, several rounds.

On a shared or virtual machine the speed drifts by ±30% within seconds, so a ratio of two `eval`
runs, even back to back, is noisy. Here the timed dev batches are cut into blocks of --block
batches; each model runs a block in turn (the order of the models rotates from block to block)
after one untimed batch, so every model sees nearly the same machine state, each with its own
weights warm in the CPU's caches as in real use. (Alternating models batch by batch would be unfair
to the smaller model: its int8 weights, 21 MB, stay in this CPU's cache between its own batches,
but not when an 85 MB float model runs in between; that measured MRPC INT8 at 2.2x, not 2.7x.)
The ratio of summed times to the baseline is taken per round; the median over rounds is reported.

  python3 bench/paired_speed.py --task sst2 BASELINE.onnx MODEL.onnx [MODEL.onnx ...]
      [--rounds 5] [--block 4] [--batch-size 32] [--warmup 3] [--threads 0] [--keep-denormals]
      [--by-length] [--json]

Batches: the dev set in file order, `--batch-size` examples each, padded to the batch's longest
(exactly `onnx-compress eval`'s batches, via bench/python_eval.py; with --by-length the examples
sorted by token count first, batches of similar lengths); the first --warmup batches run
untimed. Sessions: ONNX Runtime's CPU provider, all graph optimizations, denormals flushed to zero
like `onnx-compress eval` (unless --keep-denormals), --threads intra-op threads (0: its default).
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from python_eval import TASKS, default_data_dir, make_batches, read_tsv  # noqa: E402


def session(path, threads, keep_denormals, profile_prefix=None):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if not keep_denormals:
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", required=True, choices=sorted(TASKS))
    ap.add_argument("models", nargs="+", help="the baseline first, then the models to compare")
    ap.add_argument("--data", default=default_data_dir())
    ap.add_argument("--tokenizer", help="tokenizer.json (default: beside the baseline)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--block", type=int, default=4, help="batches a model runs in a row (after one untimed)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--keep-denormals", action="store_true")
    ap.add_argument("--by-length", action="store_true",
                    help="sort the dev examples by token count before batching (batches of similar lengths, as eval --bucket)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.block < 1 or a.rounds < 1:
        sys.exit("error: --block and --rounds must be at least 1")
    if len(a.models) < 2:
        sys.exit("error: give the baseline model and at least one model to compare")
    tok_path = a.tokenizer or os.path.join(os.path.dirname(os.path.abspath(a.models[0])), "tokenizer.json")
    for m in a.models + [tok_path]:
        if not os.path.isfile(m):
            sys.exit(f"error: {m}: no such file" + ("" if m in a.models or a.tokenizer else " (the tokenizer beside the baseline; --tokenizer names another)"))
    sub, label_col, text_cols = TASKS[a.task]
    _, texts = read_tsv(os.path.join(a.data, sub, "dev.tsv"), label_col, text_cols)
    tok = Tokenizer.from_file(tok_path)
    tok.enable_truncation(max_length=a.max_length)
    tok.no_padding()
    if a.by_length:
        lengths = [len(e.ids) for e in tok.encode_batch(texts)]
        texts = [texts[i] for i in sorted(range(len(texts)), key=lambda i: lengths[i])]
    sessions = [session(m, a.threads, a.keep_denormals) for m in a.models]
    names = [[i.name for i in s.get_inputs()] for s in sessions]
    batches = make_batches(tok, texts, a.batch_size, ["input_ids", "attention_mask", "token_type_ids"], np)
    feeds = [[{k: f[k] for k in n} for f, _ in batches] for n in names]
    for k, s in enumerate(sessions):
        for f in feeds[k][: a.warmup]:
            s.run(None, f)
    timed = range(a.warmup, len(batches))
    samples = sum(batches[b][1] for b in timed)
    rounds = []  # per round: seconds per model
    blocks = [list(timed)[i:i + a.block] for i in range(0, len(timed), a.block)]
    for r in range(a.rounds):
        secs = [0.0] * len(sessions)
        for j, block in enumerate(blocks):
            order = list(range(len(sessions)))
            shift = (j + r) % len(order)
            for k in order[shift:] + order[:shift]:
                sessions[k].run(None, feeds[k][block[0]])  # untimed: caches back after the other models
                for b in block:
                    t = time.perf_counter()
                    sessions[k].run(None, feeds[k][b])
                    secs[k] += time.perf_counter() - t
        rounds.append(secs)
        print(f"round {r + 1}/{a.rounds}: " + ", ".join(f"{samples / s:.0f}" for s in secs) + " samples/s",
              file=sys.stderr, flush=True)
    out = {"task": a.task, "batch_size": a.batch_size, "by_length": a.by_length, "timed_batches": len(timed), "timed_samples": samples,
           "rounds": a.rounds, "block": a.block, "denormals_flushed": not a.keep_denormals, "threads": a.threads,
           "ort_version": ort.__version__, "models": []}
    for k, m in enumerate(a.models):
        ratios = [rd[0] / rd[k] for rd in rounds]
        sps = [samples / rd[k] for rd in rounds]
        out["models"].append({"model": m, "samples_per_s_median": statistics.median(sps),
                              "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
                              "ratio_max": max(ratios), "ratios": ratios})
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{a.task} dev, batch {a.batch_size}, {len(timed)} timed batches x {a.rounds} rounds, "
          f"denormals {'flushed' if not a.keep_denormals else 'kept'}")
    print("| model | samples/s (median) | x baseline (median) | min–max over rounds |")
    print("|---|---:|---:|---|")
    for m in out["models"]:
        print(f"| {m['model']} | {m['samples_per_s_median']:.0f} | {m['ratio_median']:.2f} | "
              f"{m['ratio_min']:.2f}–{m['ratio_max']:.2f} |")


if __name__ == "__main__":
    main()
