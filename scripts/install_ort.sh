#!/usr/bin/env bash
# Installs the ONNX Runtime shared library (from the PyPI wheel onnxruntime==1.32.0) into the
# project: .ort/lib/libonnxruntime.so.1.32.0. The onnx-compress binary finds it there by itself.
# Needs python3 with pip and access to PyPI. Idempotent.
set -euo pipefail
VERSION=1.32.0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.ort/lib"
LIB="$DEST/libonnxruntime.so.$VERSION"

if [ -f "$LIB" ]; then
  echo "ONNX Runtime $VERSION: $LIB"
  exit 0
fi
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64|Linux-aarch64) ;;
  *) echo "install_ort.sh: only Linux x86_64/aarch64 wheels are handled; set ORT_DYLIB_PATH to your libonnxruntime instead" >&2; exit 1 ;;
esac
command -v python3 >/dev/null || { echo "install_ort.sh: python3 is needed to fetch the onnxruntime wheel from PyPI" >&2; exit 1; }

WHEELS="$ROOT/.ort/wheel"
mkdir -p "$WHEELS" "$DEST"
echo "Fetching onnxruntime==$VERSION from PyPI (wheel only, no install)..."
python3 -m pip download --quiet --no-deps --only-binary=:all: "onnxruntime==$VERSION" -d "$WHEELS"
WHEEL="$(ls "$WHEELS"/onnxruntime-"$VERSION"-*.whl | head -n 1)"
python3 - "$WHEEL" "$DEST" "$VERSION" <<'PY'
import sys, zipfile, os
wheel, dest, version = sys.argv[1:]
name = f"onnxruntime/capi/libonnxruntime.so.{version}"
with zipfile.ZipFile(wheel) as z:
    data = z.read(name)
tmp = os.path.join(dest, f".libonnxruntime.so.{version}.partial")
with open(tmp, "wb") as f:
    f.write(data)
os.replace(tmp, os.path.join(dest, f"libonnxruntime.so.{version}"))
PY
rm -rf "$WHEELS"
echo "ONNX Runtime $VERSION installed: $LIB"
