#!/usr/bin/env python3
"""Quantization benchmark: accuracy, F1, size, throughput × FP32 and pass time of every
`onnx-compress quantize` mode on the shared MiniLM-L6 models (SST-2 and MRPC dev, batch 32), next
to ONNX Runtime's own `quantize_dynamic` and `quantize_static` (bench/ort_quantize.py).

  bench/quantize_table.sh [--tasks sst2 mrpc] [--repeats 7] [--calib-samples 256]

Accuracy/F1: `onnx-compress eval --batch-size 32` over the whole dev set (file order).
Throughput: bench/paired_speed.py — every model in one ONNX Runtime process (CPU provider, all
optimizations, denormals flushed and default threads, as `eval` runs it) over the whole dev set at
batch 32 (3 warm-up batches), --repeats rounds, each model running all its batches in a row within
a round; the ratio to FP32 is taken within each round and the median over rounds reported (with
the median samples/s). Separate `eval` runs a minute apart drift by ±30% on a shared machine.
Pass time: the pass's own `seconds` (without calibration runs) and, for static, the calibration
seconds; ORT rows: the wall time of its Python quantizer (calibration included).
Writes bench/out/quantize_<task>.json and prints a Markdown table per task.
"""
import argparse
import json
import os
import statistics
import sys

import tool
from tool import BIN, OUT, ROOT, model, run, tokenizer, train

ROWS = [
    ("dynamic (per-channel)", ["--mode", "dynamic"]),
    ("dynamic --no-split-first-token", ["--mode", "dynamic", "--no-split-first-token"]),
    ("dynamic --per-tensor (ORT parity)", ["--mode", "dynamic", "--per-tensor"]),
    ("static minmax", ["--mode", "static", "--calib"]),
    ("static minmax --no-split-first-token", ["--mode", "static", "--calib", "--no-split-first-token"]),
    ("static minmax --static-form ort", ["--mode", "static", "--static-form", "ort", "--calib"]),
    ("static percentile 99.999", ["--mode", "static", "--calib", "--calib-method", "percentile"]),
    ("fp16 (CPU)", ["--mode", "fp16"]),
]


def evaluate(task, model_path):
    # ORT's quantizers do not carry the tokenizer: name it for every row alike.
    return tool.evaluate(task, model_path, "--batch-size", "32", "--warmup", "3", "--measure", "1000",
                         "--tokenizer", tokenizer(task))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", default=["sst2", "mrpc"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calib-samples", type=int, default=256)
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    for task in a.tasks:
        base = model(task)
        train_tsv = train(task)
        variants = []  # (row, path, pass_s, calib_s)
        for name, args in ROWS:
            out = os.path.join(OUT, f"{task}-{name.split(' (')[0].replace(' ', '_').replace('-', '')}.onnx")
            cmd = [BIN, "quantize", *[x for x in args if x != "--calib"], base, out, "--json"]
            if "--calib" in args:
                cmd += ["--calib-data", train_tsv, "--calib-samples", str(a.calib_samples)]
            rep = json.loads(run(cmd))
            variants.append((name, out, rep["seconds"], rep["calibration_seconds"]))
            print(f"{task} {name}: pass {rep['seconds']:.2f} s, calibration {rep['calibration_seconds']:.1f} s",
                  file=sys.stderr, flush=True)
        ort = json.loads(run([sys.executable, os.path.join(ROOT, "bench", "ort_quantize.py"), "--task", task,
                              "--model", base, "--out-dir", OUT, "--calib-samples", str(a.calib_samples)]))
        variants.append(("ORT quantize_dynamic (QInt8)", ort["ort_dynamic"]["path"], ort["ort_dynamic"]["seconds"], None))
        variants.append(("ORT quantize_static (QDQ, MatMul)", ort["ort_static"]["path"], ort["ort_static"]["seconds"], None))
        rows = {"FP32": {"path": base, "ratios": [], "sps": []}}
        for name, path, pass_s, calib_s in variants:
            rows[name] = {"path": path, "pass_s": pass_s, "calib_s": calib_s, "ratios": [], "sps": []}
        # Accuracy on the whole dev set, through `onnx-compress eval`.
        rows["FP32"]["eval"] = evaluate(task, base)
        for name, path, _, _ in variants:
            rows[name]["eval"] = evaluate(task, path)
        # Throughput: all models in one process, --repeats rounds (bench/paired_speed.py).
        tok = tokenizer(task)
        names = list(rows)
        speed = json.loads(run([sys.executable, os.path.join(ROOT, "bench", "paired_speed.py"), "--task", task,
                                "--rounds", str(a.repeats), "--tokenizer", tok, "--json",
                                *[rows[n]["path"] for n in names]]))
        for n, m in zip(names, speed["models"]):
            rows[n]["sps"] = [m["samples_per_s_median"]]
            rows[n]["ratios"] = m["ratios"]
        fp32 = rows["FP32"]["eval"]
        table = []
        for name, r in rows.items():
            e = r["eval"]
            agree = sum(p == q for p, q in zip(e["predictions"], fp32["predictions"])) / len(fp32["predictions"])
            table.append({
                "row": name,
                "accuracy": e["metrics"]["accuracy"],
                "f1": e["metrics"]["f1"],
                "agreement": agree,
                "size_bytes": e["size_bytes"],
                "samples_per_s": statistics.median(r["sps"]),
                "speedup": statistics.median(r["ratios"]),
                "speedups": r["ratios"],
                "pass_s": r.get("pass_s"),
                "calib_s": r.get("calib_s"),
            })
        with open(os.path.join(OUT, f"quantize_{task}.json"), "w") as fh:
            json.dump(table, fh, indent=1)
        b = table[0]
        print(f"\n{task} dev, batch 32 ({len(fp32['predictions'])} examples; speed: median over {a.repeats} rounds of "
              f"{speed['timed_batches']} timed batches, min-max of the ratio in brackets):\n")
        print("| variant | accuracy | Δ points | F1 | agrees with FP32 | size | % of FP32 | samples/s | × FP32 | pass time |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in table:
            if r["pass_s"] is None:
                pt = ""
            elif r["calib_s"] is None:
                pt = f"{r['pass_s']:.1f} s (Python, incl. calibration)"
            elif r["calib_s"] > 0:
                pt = f"{r['pass_s']:.2f} s + calibration {r['calib_s']:.1f} s"
            else:
                pt = f"{r['pass_s']:.2f} s"
            print(f"| {r['row']} | {r['accuracy']:.4f} | {100 * (r['accuracy'] - b['accuracy']):+.2f} | {r['f1']:.4f} | "
                  f"{100 * r['agreement']:.1f}% | {r['size_bytes'] / 1e6:.2f} MB | {100 * r['size_bytes'] / b['size_bytes']:.1f}% | "
                  f"{r['samples_per_s']:.0f} | {r['speedup']:.2f} ({min(r['speedups']):.2f}–{max(r['speedups']):.2f}) | {pt} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
