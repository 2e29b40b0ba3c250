#!/usr/bin/env bash
# `pip install .` in a fresh virtual environment, then the installed onnx-compress called by its
# absolute path with the environment not activated and ORT_DYLIB_PATH unset: --version, eval of
# 64 SST-2 examples on the shared MiniLM model (the accuracy line, and the library it used must be
# the environment's own onnxruntime), and examples/python/compress_and_classify.py on that model.
# The build reuses ./target (pip builds in the tree): about a minute when target/release is warm.
# Needs python3 (venv, pip), cargo and PyPI; ../shared (SHARED=...) or it skips (fails under CI).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared}"
SHARED="$(cd "$SHARED" 2>/dev/null && pwd || echo "$SHARED")"   # absolute: the checks run elsewhere
MODEL="$SHARED/models/minilm-l6-sst2/model.onnx"
PYTHON="${PYTHON:-python3}"

if [ ! -f "$MODEL" ]; then
  if [ "${CI:-}" = true ]; then echo "test_pip_install.sh: $MODEL is missing (required under CI)" >&2; exit 1; fi
  echo "SKIP: test_pip_install.sh: $MODEL not found"; exit 0
fi
fail() { echo "test_pip_install.sh: FAILED: $*" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/onnx-compress-pip.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
VENV="$WORK/venv"
BIN="$VENV/bin/onnx-compress"
# Nothing from the caller's environment may point the binary at a library.
unset ORT_DYLIB_PATH VIRTUAL_ENV PYTHONPATH

t0=$SECONDS
echo "== fresh virtual environment: $VENV"
"$PYTHON" -m venv "$VENV"
echo "== pip install $ROOT"
"$VENV/bin/python" -m pip install --disable-pip-version-check "$ROOT"
"$VENV/bin/python" -m pip install --disable-pip-version-check --quiet -r "$ROOT/examples/python/requirements.txt"
t_install=$((SECONDS - t0))

# From an empty folder, so data/glue is not in view (the binary would still find the checkout's
# .ort/lib by the path it was built in: the environment's own library must come first, below).
cd "$WORK"
echo "== $BIN --version"
"$BIN" --version | grep -q '^onnx-compress [0-9]' || fail "--version"

echo "== eval (64 examples)"
# Under set -e a failing $(...) would exit before its output is shown: show it, then fail.
out="$("$BIN" --quiet eval --task sst2 --model "$MODEL" --data "$SHARED/data/glue" --limit 64 2>&1)" ||
  { echo "$out"; fail "eval"; }
echo "$out"
grep -Eq '^quality +accuracy [0-9.]+' <<<"$out" || fail "eval printed no accuracy line"
lib="$("$BIN" --quiet eval --task sst2 --model "$MODEL" --data "$SHARED/data/glue" --limit 64 --json |
  "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["ort_library"])')"
echo "ONNX Runtime used: $lib"
case "$lib" in
  "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0) ;;
  *) fail "the binary did not use the environment's onnxruntime ($lib)" ;;
esac

echo "== examples/python/compress_and_classify.py"
out="$("$VENV/bin/python" "$ROOT/examples/python/compress_and_classify.py" --onnx "$MODEL" --work "$WORK/example" 2>&1)" ||
  { echo "$out"; fail "the example exited with an error"; }
echo "$out"
# A clearly positive sentence: SST-2's label 1.
grep -Eq "model\.int8\.onnx: .* -> LABEL_1 \{'LABEL_0': [0-9.e-]+, 'LABEL_1': [0-9.e-]+\}$" <<<"$out" ||
  fail "the example printed no positive label with probabilities"

echo "test_pip_install.sh: ok (venv + pip install ${t_install} s, total $((SECONDS - t0)) s)"
