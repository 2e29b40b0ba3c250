#!/usr/bin/env python3
"""Python / ONNX Runtime baseline for `onnx-compress eval`.

Runs a GLUE dev set (SST-2 or MRPC) through an ONNX sequence classifier with
onnxruntime's CPUExecutionProvider, over exactly the batches the Rust tool uses:

  * data: <data>/<task>/dev.tsv in file order (no shuffle); read as UTF-8 with
    the BOM stripped, quoting off, split on TAB, text kept verbatim (SST-2
    sentences end in a space; MRPC has unbalanced quotes);
  * tokenization: the model's tokenizer.json via the `tokenizers` library,
    truncation at --max-length (longest_first, right), no padding inside the
    tokenizer; each batch is padded to its longest member with id 0,
    attention_mask 0 and token_type_ids 0 (int64);
  * timing (see shared/docs/seed-facts.md, "Timing"): every batch is run and
    predicted; batches with index < --warmup are untimed, the next --measure
    batches are timed one by one around `session.run` only.
    ms/batch = timed seconds / timed batches * 1000,
    samples/s = timed samples / timed seconds.

Usage:
  python bench/python_eval.py --task sst2 --model ../shared/models/minilm-l6-sst2/model.onnx
  python bench/python_eval.py --task mrpc --model M/model.onnx --threads 2 --json

Requirements: bench/requirements.txt (onnxruntime, tokenizers, numpy).
"""

import argparse
import json
import os
import sys
import time

# Per task: (sub-folder, label column, text column(s)) of the GLUE dev.tsv.
TASKS = {
    "sst2": ("sst2", "label", ("sentence",)),
    "mrpc": ("mrpc", "Quality", ("#1 String", "#2 String")),
}
# The reference experiment's batch sizes (seed-facts.md, "Evaluation").
DEFAULT_BATCH = {"sst2": 32, "mrpc": 24}


def default_data_dir():
    # bench/ -> repo root -> ../shared/data/glue (the layout every developer has).
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "shared", "data", "glue"))


def read_tsv(path, label_col, text_cols):
    """Read a GLUE TSV: quoting off, split on TAB only, text verbatim.

    Returns (labels, texts) where texts[i] is a str (one column) or a tuple
    of str (sentence pairs).
    """
    # utf-8-sig drops the BOM that MRPC's files start with. newline="" keeps
    # the raw line endings so that we strip exactly one terminator per line.
    with open(path, encoding="utf-8-sig", newline="") as f:
        content = f.read()
    # Split on "\n" only: str.splitlines() would also split on \x0b, \x1c,
    # \u2028 etc., which may occur inside a sentence.
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [l[:-1] if l.endswith("\r") else l for l in lines]
    header = lines[0].split("\t")
    try:
        li = header.index(label_col)
        tis = [header.index(c) for c in text_cols]
    except ValueError as e:
        sys.exit(f"error: {path}: missing column ({e}); header is {header}")
    labels, texts = [], []
    for n, line in enumerate(lines[1:], start=2):
        cols = line.split("\t")
        if len(cols) != len(header):
            sys.exit(f"error: {path}:{n}: {len(cols)} fields, expected {len(header)}")
        labels.append(int(cols[li]))
        if len(tis) == 1:
            texts.append(cols[tis[0]])
        else:
            texts.append(tuple(cols[i] for i in tis))
    return labels, texts


def make_batches(tokenizer, texts, batch_size, input_names, np):
    """Tokenize and pad each batch; returns a list of (feed dict, batch len)."""
    batches = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        encs = tokenizer.encode_batch(chunk)
        seq = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), seq), dtype=np.int64)
        mask = np.zeros((len(encs), seq), dtype=np.int64)
        tt = np.zeros((len(encs), seq), dtype=np.int64)
        for r, e in enumerate(encs):
            n = len(e.ids)
            ids[r, :n] = e.ids
            mask[r, :n] = 1
            tt[r, :n] = e.type_ids
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}
        # Only feed the inputs the model declares (e.g. some exports drop
        # token_type_ids).
        feed = {name: arrays[name] for name in input_names}
        batches.append((feed, len(encs)))
    return batches


def metrics(preds, labels):
    tp = sum(1 for p, y in zip(preds, labels) if p == 1 and y == 1)
    fp = sum(1 for p, y in zip(preds, labels) if p == 1 and y != 1)
    fn = sum(1 for p, y in zip(preds, labels) if p != 1 and y == 1)
    correct = sum(1 for p, y in zip(preds, labels) if p == y)
    acc = correct / len(labels) if labels else 0.0
    denom = 2 * tp + fp + fn
    f1 = 2 * tp / denom if denom else 0.0
    return acc, f1


def main():
    ap = argparse.ArgumentParser(
        description="ONNX Runtime (Python) GLUE dev evaluation: the baseline for onnx-compress eval."
    )
    ap.add_argument("--task", required=True, choices=sorted(TASKS))
    ap.add_argument("--model", required=True, help="path to model.onnx")
    ap.add_argument(
        "--tokenizer", help="tokenizer.json (default: tokenizer.json beside the model)"
    )
    ap.add_argument(
        "--data",
        default=default_data_dir(),
        help="GLUE data folder holding <task>/dev.tsv (default: ../shared/data/glue)",
    )
    ap.add_argument(
        "--batch-size",
        type=int,
        help="default: 32 for sst2, 24 for mrpc (as the reference)",
    )
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="intra-op threads (0 = ONNX Runtime default)",
    )
    ap.add_argument("--warmup", type=int, default=10, help="untimed leading batches")
    ap.add_argument(
        "--measure", type=int, default=50, help="timed batches after warm-up"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    batch_size = args.batch_size or DEFAULT_BATCH[args.task]
    if batch_size < 1 or args.max_length < 2 or args.warmup < 0 or args.measure < 0:
        ap.error("--batch-size >= 1, --max-length >= 2, --warmup/--measure >= 0")
    tok_path = args.tokenizer or os.path.join(
        os.path.dirname(os.path.abspath(args.model)), "tokenizer.json"
    )

    try:
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer
    except ImportError as e:
        sys.exit(f"error: {e}\n  pip install -r bench/requirements.txt")

    wall_start = time.perf_counter()

    sub, label_col, text_cols = TASKS[args.task]
    tsv = os.path.join(args.data, sub, "dev.tsv")
    labels, texts = read_tsv(tsv, label_col, text_cols)

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    input_names = [i.name for i in session.get_inputs()]
    unknown = [
        n
        for n in input_names
        if n not in ("input_ids", "attention_mask", "token_type_ids")
    ]
    if unknown:
        sys.exit(f"error: model declares unsupported inputs {unknown}")
    output_name = session.get_outputs()[0].name  # `logits` for our exports

    # Tokenizer: truncation from --max-length, never from the file's own
    # setting (the shipped SST-2 tokenizer.json says 64); no padding.
    tokenizer = Tokenizer.from_file(tok_path)
    tokenizer.enable_truncation(max_length=args.max_length)
    tokenizer.no_padding()

    t0 = time.perf_counter()
    batches = make_batches(tokenizer, texts, batch_size, input_names, np)
    tokenize_s = time.perf_counter() - t0

    preds = []
    latencies = []  # seconds, one per timed batch
    timed_samples = 0
    for bi, (feed, n) in enumerate(batches):
        timed = args.warmup <= bi < args.warmup + args.measure
        if timed:
            t = time.perf_counter()
            (logits,) = session.run([output_name], feed)
            latencies.append(time.perf_counter() - t)
            timed_samples += n
        else:
            (logits,) = session.run([output_name], feed)
        preds.extend(int(p) for p in np.argmax(logits, axis=1))

    wall_s = time.perf_counter() - wall_start

    acc, f1 = metrics(preds, labels)
    timed_s = sum(latencies)
    if latencies:
        ms_per_batch = timed_s / len(latencies) * 1000.0
        samples_per_s = timed_samples / timed_s
        # numpy's default (linear interpolation) percentiles.
        p50_ms = float(np.percentile(latencies, 50)) * 1000.0
        p95_ms = float(np.percentile(latencies, 95)) * 1000.0
    else:
        ms_per_batch = samples_per_s = p50_ms = p95_ms = None

    result = {
        "task": args.task,
        "model": args.model,
        "batch_size": batch_size,
        "threads": args.threads,
        "accuracy": acc,
        "f1": f1,
        "timed_batches": len(latencies),
        "timed_samples": timed_samples,
        "ms_per_batch": ms_per_batch,
        "samples_per_s": samples_per_s,
        "p50_ms": p50_ms,
        "p95_ms": p95_ms,
        "tokenize_s": tokenize_s,
        "wall_s": wall_s,
        "predictions": preds,
    }

    if args.json:
        print(json.dumps(result))
        return

    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)

    rows = [
        ("task", args.task),
        ("model", args.model),
        ("examples", str(len(labels))),
        ("batches", f"{len(batches)} x {batch_size}"),
        ("threads", f"{args.threads} (0 = ORT default)"),
        ("onnxruntime", ort.__version__),
        ("accuracy", f"{acc:.4f}"),
        ("f1 (class 1)", f"{f1:.4f}"),
        ("timed batches", f"{len(latencies)} ({timed_samples} samples)"),
        ("ms/batch", fmt(ms_per_batch, ".2f")),
        ("samples/s", fmt(samples_per_s, ".1f")),
        ("p50 ms", fmt(p50_ms, ".2f")),
        ("p95 ms", fmt(p95_ms, ".2f")),
        ("tokenize s", f"{tokenize_s:.3f}"),
        ("wall s", f"{wall_s:.3f}"),
    ]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")


if __name__ == "__main__":
    main()
