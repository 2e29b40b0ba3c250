"""What the bench scripts share: where the release binary, ../shared and bench/out are, and
running a command (the binary, or a Python script) with its failure shown as one line."""
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The release build, or the binary ONNX_COMPRESS names (as the matrix scripts read it).
BIN = os.environ.get("ONNX_COMPRESS") or os.path.join(ROOT, "target", "release", "onnx-compress")
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
OUT = os.path.join(ROOT, "bench", "out")


def model(task):
    return os.path.join(SHARED, "models", f"minilm-l6-{task}", "model.onnx")


def tokenizer(task):
    return os.path.join(SHARED, "models", f"minilm-l6-{task}", "tokenizer.json")


def train(task):
    return os.path.join(SHARED, "data", "glue", task, "train.tsv")


def run(cmd):
    """Runs `cmd` (a list) and returns its stdout; stops the script with its stderr on failure."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        hint = " (cargo build --release, or set ONNX_COMPRESS)" if cmd[0] == BIN else ""
        raise SystemExit(f"{cmd[0]}: cannot run it: {e.strerror}{hint}")
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


def evaluate(task, model_path, *args):
    """`onnx-compress eval --json` of `model_path` on the task's dev set, with extra `args`."""
    return json.loads(run([BIN, "eval", "--task", task, "--model", model_path, "--json", *args]))
