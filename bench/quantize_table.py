#!/usr/bin/env python3
"""Quantization benchmark: accuracy, F1, size, throughput × FP32 and pass time of every
`onnx-compress quantize` mode on the shared MiniLM-L6 models (SST-2 and MRPC dev, batch 32), next
to ONNX Runtime's own `quantize_dynamic` and `quantize_static` (bench/ort_quantize.py).

  bench/quantize_table.sh [--tasks sst2 mrpc] [--repeats 3] [--calib-samples 256] [--timing-examples 512]

Accuracy/F1: `onnx-compress eval --batch-size 32` over the whole dev set (file order).
Throughput: `eval` on the first --timing-examples (512) dev examples, batch 32, 3 warm-up batches
then every batch timed (forward only), ONNX Runtime's default threads. FP32 and each variant are
run back to back (paired), --repeats times; the median of the paired ratios is reported, and the
median samples/s (pairing cancels most of the drift of a shared machine).
Pass time: the pass's own `seconds` (without calibration runs) and, for static, the calibration
seconds; ORT rows: the wall time of its Python quantizer (calibration included).
Writes bench/out/quantize_<task>.json and prints a Markdown table per task.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "onnx-compress")
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
OUT = os.path.join(ROOT, "bench", "out")

ROWS = [
    ("dynamic (per-channel)", ["--mode", "dynamic"]),
    ("dynamic --per-tensor (ORT parity)", ["--mode", "dynamic", "--per-tensor"]),
    ("static minmax", ["--mode", "static", "--calib"]),
    ("static percentile 99.999", ["--mode", "static", "--calib", "--calib-method", "percentile"]),
    ("fp16 (CPU)", ["--mode", "fp16"]),
]


def run(args):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def evaluate(task, model, extra=()):
    # ORT's quantizers do not carry the tokenizer: name it for every row alike.
    tok = os.path.join(SHARED, "models", f"minilm-l6-{task}", "tokenizer.json")
    return json.loads(run([BIN, "eval", "--task", task, "--model", model, "--json", "--batch-size", "32",
                           "--warmup", "3", "--measure", "1000", "--tokenizer", tok, *extra]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", default=["sst2", "mrpc"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--timing-examples", type=int, default=512)
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    for task in a.tasks:
        base = os.path.join(SHARED, "models", f"minilm-l6-{task}", "model.onnx")
        train = os.path.join(SHARED, "data", "glue", task, "train.tsv")
        variants = []  # (row, path, pass_s, calib_s)
        for name, args in ROWS:
            out = os.path.join(OUT, f"{task}-{name.split(' (')[0].replace(' ', '_').replace('-', '')}.onnx")
            cmd = [BIN, "quantize", *[x for x in args if x != "--calib"], base, out, "--json"]
            if "--calib" in args:
                cmd += ["--calib-data", train, "--calib-samples", str(a.calib_samples)]
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
        # Accuracy (and a first timing) on the whole dev set.
        rows["FP32"]["eval"] = evaluate(task, base)
        for name, path, _, _ in variants:
            rows[name]["eval"] = evaluate(task, path)
        # Throughput: FP32 and each variant run back to back (paired), `--repeats` times, on the
        # first --timing-examples dev examples (every batch after 3 warm-up ones timed).
        limit = ["--limit", str(a.timing_examples)]
        for rep in range(a.repeats):
            for name, path, _, _ in variants:
                f = evaluate(task, base, limit)["timing"]["samples_per_s"]
                v = evaluate(task, path, limit)["timing"]["samples_per_s"]
                rows["FP32"]["sps"].append(f)
                rows[name]["sps"].append(v)
                rows[name]["ratios"].append(v / f)
            print(f"{task} repeat {rep + 1}/{a.repeats} done", file=sys.stderr, flush=True)
        rows["FP32"]["ratios"] = [1.0]
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
        print(f"\n{task} dev, batch 32 ({len(fp32['predictions'])} examples; speed: median of {a.repeats} paired runs on the first {a.timing_examples}):\n")
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
                  f"{r['samples_per_s']:.0f} | {r['speedup']:.2f} | {pt} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
