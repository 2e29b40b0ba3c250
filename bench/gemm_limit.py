#!/usr/bin/env python3
"""How close each model runs to this machine's limit (issue 17 item 4).

  python3 bench/gemm_limit.py --task sst2 MODEL.onnx [MODEL.onnx ...] [--tokenizer T] [--batches 12]
      [--threads 0] [--json OUT.json]

1. Peaks: ONNX Runtime (CPU provider, all optimizations, --threads) runs one-node graphs, a float
   `MatMul` and a u8 x s8 `MatMulInteger`, at 2048^3 and at the shapes of a MiniLM batch (2048
   tokens x 384 -> 1536 and 1536 -> 384), several times; the best run's MACs per second is the peak.
2. Profile: each model runs the first --batches dev batches (file order, batch 32, as `eval`) with
   ONNX Runtime's profiler on, after one untimed pass over the same batches. Node times are summed
   by kind: integer GEMMs (MatMulInteger, MatMulIntegerToFloat, DynamicQuantizeMatMul, QGemm,
   QAttention's...), float GEMMs (MatMul, Gemm, FusedMatMul) and everything else (softmax,
   LayerNorm, GELU, quantize/dequantize, transposes, adds, ...). A GEMM node's MACs are
   prod(output shape) x the reduced dimension, from the shapes the profiler records.
   ONNX's `Attention` op (one per attention in the int8 ORT forms) counts as "other" in time, but
   its two float products (scores and the weighted sum, 2 x batch x query x key x heads·head
   MACs from its Q and K shapes) count in the limit at the float peak, so a graph with it has the
   same limit as the same graph without it (not in the float GEMM rate).
3. Limit: the time the model's GEMMs would take at the peak of their kind, with nothing else
   costing anything. `x of limit` = measured / limit: 1.0 is the machine's ceiling for that graph.

Prints a Markdown table per section; --json writes everything.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paired_speed import session as paired_session  # noqa: E402
from python_eval import TASKS, default_data_dir, make_batches, read_tsv  # noqa: E402


def session(model, threads, profile_dir=None):
    """paired_speed.py's session (all optimizations, denormals flushed), with the profiler on
    when `profile_dir` is given."""
    return paired_session(model, threads, False, profile_dir and os.path.join(profile_dir, "profile"))


INT_GEMM = {"MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QGemm", "QLinearMatMul",
            "MatMulNBits"}
FLOAT_GEMM = {"MatMul", "Gemm", "FusedMatMul", "FusedGemm"}


def gemm_model(kind, m, k, n, rng):
    """A one-node graph: A [m, k] (input) times B [k, n] (initializer)."""
    if kind == "float":
        b = rng.standard_normal((k, n)).astype(np.float32)
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type, y_type, inits = TensorProto.FLOAT, TensorProto.FLOAT, [numpy_helper.from_array(b, "B")]
    else:
        b = rng.integers(-127, 128, (k, n), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["A", "B", "az", "bz"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
        inits = [numpy_helper.from_array(b, "B"), numpy_helper.from_array(np.array(128, np.uint8), "az"),
                 numpy_helper.from_array(np.array(0, np.int8), "bz")]
    g = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("A", a_type, [m, k])],
                          [helper.make_tensor_value_info("Y", y_type, [m, n])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def peaks(threads, reps):
    rng = np.random.default_rng(0)
    shapes = [(2048, 2048, 2048), (2048, 384, 1536), (2048, 1536, 384)]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for kind in ["float", "int8"]:
            for m, k, n in shapes:
                path = os.path.join(d, f"{kind}.onnx")
                onnx.save(gemm_model(kind, m, k, n, rng), path)
                s = session(path, threads)
                a = (rng.standard_normal((m, k)).astype(np.float32) if kind == "float"
                     else rng.integers(0, 256, (m, k), dtype=np.uint8))
                s.run(None, {"A": a})
                best = float("inf")
                for _ in range(reps):
                    t = time.perf_counter()
                    s.run(None, {"A": a})
                    best = min(best, time.perf_counter() - t)
                rows.append({"kind": kind, "m": m, "k": k, "n": n, "seconds": best, "gmacs": m * k * n / best / 1e9})
                print(f"peak {kind} {m}x{k}x{n}: {m * k * n / best / 1e9:.1f} GMAC/s", file=sys.stderr, flush=True)
    peak = {kind: max(r["gmacs"] for r in rows if r["kind"] == kind) for kind in ["float", "int8"]}
    return rows, peak


def attention_macs(ev):
    """MACs of the two products inside an ONNX `Attention` on 3-D Q [B, Sq, H·d], K [B, Skv, H·d]."""
    ins = [list(i.values())[0] for i in ev.get("args", {}).get("input_type_shape") or []]
    if len(ins) < 2 or len(ins[0]) != 3 or len(ins[1]) != 3:
        return 0
    (b, sq, width), (_, skv, _) = ins[0], ins[1]
    return 2 * b * sq * skv * width


def gemm_macs(ev):
    args = ev.get("args", {})
    out = args.get("output_type_shape") or []
    ins = args.get("input_type_shape") or []
    if not out or not ins:
        return 0
    out_shape = list(out[0].values())[0]
    a_shape = list(ins[0].values())[0]
    if not out_shape or not a_shape:
        return 0
    k = a_shape[-1]
    if args.get("op_name") in ("Gemm", "FusedGemm", "QGemm"):
        # Gemm's A may be transposed (transA): the reduced dimension is the one not in the output.
        k = a_shape[0] if len(a_shape) == 2 and a_shape[1] == out_shape[0] and a_shape[0] != out_shape[0] else k
    n = 1
    for d in out_shape:
        n *= d
    return n * k


def profile(model, feeds, threads):
    with tempfile.TemporaryDirectory() as d:
        warm = session(model, threads)
        for f in feeds:
            warm.run(None, f)
        del warm
        s = session(model, threads, d)
        t = time.perf_counter()
        for f in feeds:
            s.run(None, f)
        wall = time.perf_counter() - t
        path = s.end_profiling()
        events = json.load(open(path))
    by_kind = {"int8 GEMM": 0.0, "float GEMM": 0.0, "other": 0.0}
    macs = {"int8 GEMM": 0, "float GEMM": 0, "attention": 0}
    by_op = {}
    for ev in events:
        if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
            continue
        op = ev.get("args", {}).get("op_name", "?")
        sec = ev["dur"] / 1e6
        kind = "int8 GEMM" if op in INT_GEMM else "float GEMM" if op in FLOAT_GEMM else "other"
        by_kind[kind] += sec
        by_op[op] = by_op.get(op, 0.0) + sec
        if kind != "other":
            macs[kind] += gemm_macs(ev)
        elif op == "Attention":
            macs["attention"] += attention_macs(ev)
    return {"wall_s": wall, "node_s": by_kind, "macs": macs, "by_op": dict(sorted(by_op.items(), key=lambda x: -x[1]))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", required=True, choices=sorted(TASKS))
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", default=default_data_dir())
    ap.add_argument("--tokenizer", help="tokenizer.json (default: beside the first model)")
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args()
    for m in a.models:
        if not os.path.isfile(m):
            sys.exit(f"error: {m}: no such file")
    rows, peak = peaks(a.threads, a.reps)
    sub, label_col, text_cols = TASKS[a.task]
    _, texts = read_tsv(os.path.join(a.data, sub, "dev.tsv"), label_col, text_cols)
    tok = Tokenizer.from_file(a.tokenizer or os.path.join(os.path.dirname(os.path.abspath(a.models[0])), "tokenizer.json"))
    tok.enable_truncation(max_length=128)
    tok.no_padding()
    batches = make_batches(tok, texts[: 32 * a.batches], 32, ["input_ids", "attention_mask", "token_type_ids"], np)
    results = []
    for m in a.models:
        names = [i.name for i in ort.InferenceSession(m, providers=["CPUExecutionProvider"]).get_inputs()]
        feeds = [{k: f[k] for k in names} for f, _ in batches]
        p = profile(m, feeds, a.threads)
        limit = p["macs"]["int8 GEMM"] / (peak["int8"] * 1e9) + (p["macs"]["float GEMM"] + p["macs"]["attention"]) / (peak["float"] * 1e9)
        p.update(model=m, limit_s=limit)
        results.append(p)
        print(f"profiled {m}", file=sys.stderr, flush=True)

    print(f"ONNX Runtime {ort.__version__}, threads {a.threads or 'default'}; peaks (best of {a.reps}):")
    print("| GEMM | M x K x N | GMAC/s |")
    print("|---|---|---:|")
    for r in rows:
        print(f"| {r['kind']} | {r['m']} x {r['k']} x {r['n']} | {r['gmacs']:.1f} |")
    print(f"\n{a.task} dev, first {len(batches)} batches of 32 (file order), profiled after one untimed pass:")
    print("| model | ms/batch | int8 GEMM | float GEMM | other | GEMM GMAC/s (int8, float) | limit ms/batch | x of limit |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for p in results:
        node = sum(p["node_s"].values())
        share = {k: v / node for k, v in p["node_s"].items()}
        rate = lambda k: f"{p['macs'][k] / p['node_s'][k] / 1e9:.0f}" if p["node_s"][k] > 0 else "–"  # noqa: E731
        nb = len(batches)
        print(f"| {os.path.basename(os.path.dirname(p['model']))}/{os.path.basename(p['model'])} | {p['wall_s'] / nb * 1e3:.1f} | "
              f"{share['int8 GEMM']:.0%} | {share['float GEMM']:.0%} | {share['other']:.0%} | "
              f"{rate('int8 GEMM')}, {rate('float GEMM')} | {p['limit_s'] / nb * 1e3:.1f} | {p['wall_s'] / p['limit_s']:.1f} |")
    print("\nwhere the other time goes (top 6 ops, share of node time):")
    for p in results:
        node = sum(p["node_s"].values())
        top = ", ".join(f"{op} {s / node:.0%}" for op, s in list(p["by_op"].items())[:6])
        print(f"- {os.path.basename(p['model'])}: {top}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"ort_version": ort.__version__, "peaks": rows, "peak_gmacs": peak, "models": results}, f, indent=2)


if __name__ == "__main__":
    main()
