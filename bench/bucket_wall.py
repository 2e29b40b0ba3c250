#!/usr/bin/env python3
"""Whole-dev wall time of `onnx-compress eval`, end to end (reading the model, ONNX Runtime's
session, tokenization, every batch, metrics), of compressed models against the FP32 model in file
order (issue 17, item 3). Each round runs the FP32 model, then each model in file order and with
--bucket (length-bucketed batches, predictions still reported in file order), one process each,
in an order that rotates from round to round; the ratio FP32 wall / model wall is taken per round
and the median reported, with the accuracy of each run and how many predictions bucketing changed
(none for float models; dynamic INT8 sets its activation scales per batch, so a batch of other
examples can move an example across the boundary).

  python3 bench/bucket_wall.py --task sst2 FP32.onnx MODEL.onnx [MODEL.onnx ...] [--rounds 5] [--bin BINARY (default: $ONNX_COMPRESS, else the release build)]
"""
import argparse
import json
import statistics
import sys

from tool import BIN, run as tool_run


def run(binary, task, model, bucket):
    cmd = [binary, "eval", "--task", task, "--model", model, "--json", "-q"] + (["--bucket"] if bucket else [])
    r = json.loads(tool_run(cmd))
    return r["wall_seconds"], r["tokenize_seconds"], r["metrics"]["accuracy"], r["predictions"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", required=True)
    ap.add_argument("models", nargs="+", help="the FP32 model first, then the models to compare")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bin", default=BIN)
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    base = a.models[0]
    variants = [(base, False)] + [(m, b) for m in a.models[1:] for b in (False, True)]
    walls = {v: [] for v in variants}
    info = {}
    for r in range(a.rounds):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        for v in order:
            wall, tok, acc, preds = run(a.bin, a.task, v[0], v[1])
            walls[v].append(wall)
            info.setdefault(v, (tok, acc, preds))
        print(f"round {r + 1}/{a.rounds}: " + ", ".join(f"{walls[v][-1]:.2f} s" for v in variants), file=sys.stderr)
    print(f"{a.task} dev, whole `eval` wall time, {a.rounds} rounds (median; ratio per round, then median)")
    print("| model | batches | accuracy | predictions changed by bucketing | wall s | tokenize s | × FP32 file order (min–max) |")
    print("|---|---|---:|---:|---:|---:|---|")
    for v in variants:
        ratios = [b / w for b, w in zip(walls[variants[0]], walls[v])]
        tok, acc, preds = info[v]
        changed = "" if not v[1] else str(sum(x != y for x, y in zip(preds, info[(v[0], False)][2])))
        print(
            f"| {v[0]} | {'bucketed' if v[1] else 'file order'} | {acc:.4f} | {changed} | "
            f"{statistics.median(walls[v]):.2f} | {tok:.2f} | {statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) |"
        )


if __name__ == "__main__":
    main()
