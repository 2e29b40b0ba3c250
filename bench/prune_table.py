#!/usr/bin/env python3
"""Pruning benchmark: accuracy, pass time and throughput of every pruning row on the shared
MiniLM-L6 models (SST-2 and MRPC dev), next to FP32 and the reference-method (l1) rows.

  python3 bench/prune_table.py [--tasks sst2 mrpc] [--repeats 3] [--threads 2]

Accuracy: `onnx-compress eval` with the reference's settings (batch 32 / MRPC 24).
Throughput: batch 32, dynamic padding, 3 warm-up batches then every batch timed; the pruned model
and the FP32 model are run alternately `--repeats` times and the median ratio is reported
(this machine drifts by ±15% between runs, interleaving cancels most of it).
Writes bench/out/prune_<task>.json and prints a Markdown table per task.
"""
import argparse
import json
import os
import statistics
import time

import tool
from tool import BIN, OUT, model, run, train

ROWS = [
    ("l1: heads 25%", ["--heads", "0.25"]),
    ("l1: FFN 15%", ["--ffn", "0.15"]),
    ("l1: heads 15% + FFN 10%", ["--heads", "0.15", "--ffn", "0.10"]),
    ("obs: heads 25%", ["--heads", "0.25", "--calib"]),
    ("obs: FFN 15%", ["--ffn", "0.15", "--calib"]),
    ("obs: heads 15% + FFN 10%", ["--heads", "0.15", "--ffn", "0.10", "--calib"]),
    ("obs: target MACs 0.6", ["--target-macs", "0.6", "--calib"]),
]


def evaluate(task, model_path, threads, extra=()):
    return tool.evaluate(task, model_path, "--threads", str(threads), *extra)


def throughput(task, model_path, threads):
    r = evaluate(task, model_path, threads, ["--batch-size", "32", "--warmup", "3", "--measure", "1000"])
    return r["timing"]["samples_per_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", default=["sst2", "mrpc"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    for task in a.tasks:
        base = model(task)
        train_tsv = train(task)
        fp32 = evaluate(task, base, a.threads)
        rows = [{"row": "FP32", "accuracy": fp32["metrics"]["accuracy"], "f1": fp32["metrics"]["f1"],
                 "pass_s": None, "macs": 1.0, "params": None, "speedup": 1.0, "speedups": []}]
        for name, args in ROWS:
            out = os.path.join(OUT, f"{task}-{name.replace(' ', '_').replace(':', '').replace('%', '').replace('+', 'and')}.onnx")
            cmd = [BIN, "prune", *[x for x in args if x != "--calib"], base, out, "--json"]
            if "--calib" in args:
                cmd += ["--calib-data", train_tsv]
            t = time.perf_counter()
            rep = json.loads(run(cmd))
            pass_s = time.perf_counter() - t
            acc = evaluate(task, out, a.threads)
            speedups = []
            for _ in range(a.repeats):
                b = throughput(task, base, a.threads)
                p = throughput(task, out, a.threads)
                speedups.append(p / b)
            rows.append({
                "row": name,
                "accuracy": acc["metrics"]["accuracy"],
                "f1": acc["metrics"]["f1"],
                "pass_s": pass_s,
                "macs": rep["encoder_macs_after"] / rep["encoder_macs_before"],
                "params": rep["params_after"] / rep["params_before"],
                "layers": [(l["heads_after"], l["neurons_after"]) for l in rep["layers"]],
                "speedup": statistics.median(speedups),
                "speedups": speedups,
            })
            os.remove(out)
            print(f"{task} {name}: acc {rows[-1]['accuracy']:.4f} speedup {rows[-1]['speedup']:.2f} pass {pass_s:.1f}s", flush=True)
        with open(os.path.join(OUT, f"prune_{task}.json"), "w") as f:
            json.dump(rows, f, indent=1)
        base_acc = rows[0]["accuracy"]
        print(f"\n{task}: | row | accuracy | Δ points | F1 | encoder MACs | params | throughput × FP32 (batch 32) | pass time | heads/FFN per layer |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in rows:
            params = "" if r["params"] is None else "%.1f%%" % (100 * r["params"])
            pass_s = "" if r["pass_s"] is None else "%.1f s" % r["pass_s"]
            layers = " ".join("%d/%d" % (h, n) for h, n in r.get("layers", []))
            delta = 100 * (r["accuracy"] - base_acc)
            print(f"| {r['row']} | {r['accuracy']:.4f} | {delta:+.2f} | {r['f1']:.4f} | "
                  f"{100 * r['macs']:.0f}% | {params} | {r['speedup']:.2f} | {pass_s} | {layers} |")


if __name__ == "__main__":
    main()
