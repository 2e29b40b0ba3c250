#!/usr/bin/env python3
"""Analysis (bench/RESULTS.md, "Session-optimized twins"): does every fixture, saved after ONNX
Runtime's session optimizations, map as it did and come out of each pass as it does?

For each model under tests/fixtures (and tests/fixtures/matrix) it writes a twin through
`SessionOptions.optimized_model_filepath` at ORT_ENABLE_EXTENDED, compares `inspect`'s
transformer line of both, then runs on both `prune --heads 0.5`, `prune --ffn 0.5`,
`lowrank --energy 1 --force` (full rank), `lowrank --rank 4`,
`quantize --mode dynamic` and `--mode fp16`, and compares on a padded random batch: the pruned
and rank-4 outputs of the two (max |difference| <= 1e-4), full rank against the float model
(<= 1e-4), and the RMS relative logit error of each quantized model against its float model
(the twin's no more than 1.5x the source's, or under 0.05 / 0.01 for fp16). One line per model,
then the counts.

Needs onnxruntime==1.32.0, onnx, numpy and a release build (ONNX_COMPRESS, default
target/release/onnx-compress; ORT_DYLIB_PATH set for it). Usage:
python bench/matrix/session_twins.py [FIXTURE ...]
"""
import collections
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../..")
BIN = os.environ.get("ONNX_COMPRESS", os.path.join(ROOT, "target/release/onnx-compress"))
COMMANDS = [
    ["prune", "--heads", "0.5"],
    ["prune", "--ffn", "0.5"],
    ["lowrank", "--energy", "1", "--force"],
    ["lowrank", "--rank", "4"],
    ["quantize", "--mode", "dynamic"],
    ["quantize", "--mode", "fp16"],
]


def options(level=None):
    o = ort.SessionOptions()
    o.log_severity_level = 3
    if level is not None:
        o.graph_optimization_level = level
    return o


def outputs(path, feed):
    s = ort.InferenceSession(path, options(), providers=["CPUExecutionProvider"])
    f = {i.name: feed[i.name].astype(np.int32 if "int32" in i.type else np.int64) for i in s.get_inputs()}
    return s.run(None, f)[0]


def transformer_line(path):
    p = subprocess.run([BIN, "inspect", path], capture_output=True, text=True)
    if p.returncode:
        return "refused: " + p.stderr.strip()[-200:]
    return next(line for line in p.stdout.splitlines() if line.startswith("transformer"))


def rms(a, base):
    return float(np.sqrt(((a - base) ** 2).mean() / (base**2).mean()))


def main():
    models = sorted(glob.glob(f"{ROOT}/tests/fixtures/*/model.onnx") + glob.glob(f"{ROOT}/tests/fixtures/matrix/*/model.onnx"))
    models = [m for m in models if not m.split("/")[-2].endswith("-session")]
    if len(sys.argv) > 1:
        models = [m for m in models if m.split("/")[-2] in sys.argv[1:]]
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 60, (4, 12)).astype(np.int64)
    ids[:, 0] = 2
    mask = np.ones((4, 12), np.int64)
    mask[1, 8:] = 0
    mask[3, 5:] = 0
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros((4, 12), np.int64)}
    tally = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for source in models:
            name = source.split("/")[-2]
            twin = os.path.join(tmp, f"{name}-session.onnx")
            o = options(ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
            o.optimized_model_filepath = twin
            ort.InferenceSession(source, o, providers=["CPUExecutionProvider"])
            same = transformer_line(source) == transformer_line(twin)
            tally["maps the same" if same else "MAPS OTHERWISE"] += 1
            base = outputs(source, feed)
            cells = []
            for cmd in COMMANDS:
                tag = " ".join(cmd[:3])
                written = []
                for label, path in (("source", source), ("twin", twin)):
                    out = os.path.join(tmp, f"{label}.onnx")
                    if os.path.exists(out):
                        os.remove(out)
                    p = subprocess.run([BIN, *cmd, path, out], capture_output=True, text=True)
                    written.append(out if p.returncode == 0 else None)
                if not any(written):
                    verdict = "both refused"
                elif not all(written):
                    verdict = "ONE REFUSED"
                else:
                    a, b = outputs(written[0], feed), outputs(written[1], feed)
                    if cmd[0] == "quantize":
                        ea, eb = rms(a, base), rms(b, base)
                        ok = eb <= max(1.5 * ea, 0.01 if cmd[-1] == "fp16" else 0.05)
                        verdict = f"{'ok' if ok else 'WORSE'} {ea:.3g}/{eb:.3g}"
                    elif cmd[1] == "--energy":
                        d = float(max(np.abs(a - base).max(), np.abs(b - base).max()))
                        verdict = f"{'ok' if d <= 1e-4 else 'DIFFERS'} {d:.1e}"
                    else:
                        d = float(np.abs(a - b).max())
                        verdict = f"{'ok' if d <= 1e-4 else 'DIFFERS'} {d:.1e}"
                tally[f"{tag}: {verdict.split()[0] if verdict[0] in 'oWD' else verdict}"] += 1
                cells.append(f"{tag}: {verdict}")
            print(f"{name} ({'maps the same' if same else 'MAPS OTHERWISE'}) | " + " | ".join(cells), flush=True)
    for k, v in sorted(tally.items()):
        print(f"{v:4}  {k}")


if __name__ == "__main__":
    main()
