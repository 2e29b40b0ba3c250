#!/usr/bin/env bash
# issue 16's targets again with one Attention op per attention: auto (seed 0, the defaults) at
# --max-drop 0.5 and 1.0 (the journal reused), the hand recipes rebuilt, everything paired on dev.
# O=DIR writes elsewhere (default bench/out/auto-op; RESULTS.md's runs named folders of their
# machine, e.g. O=/work/auto-depth); TASKS=mrpc runs one task. ONNX Runtime's quantize_dynamic peer
# is built into V (default bench/out/vnni) where it is not there; the hand-built packed p60 model
# of "One Attention op per attention" (PACKED, default bench/out/packed) is paired only where it
# exists. ONNX_COMPRESS (the binary; default the release build), SHARED (default ../shared beside
# the repository) and PY (a Python with bench/requirements.txt; default python3) as elsewhere.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=${ONNX_COMPRESS:-$ROOT/target/release/onnx-compress}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$ROOT/.ort/lib/libonnxruntime.so.1.32.0}
PY=${PY:-python3}
S=${SHARED:-$ROOT/../shared}; O=${O:-$ROOT/bench/out/auto-op}; V=${V:-$ROOT/bench/out/vnni}
PACKED=${PACKED:-$ROOT/bench/out/packed}; mkdir -p "$O" "$V"
# Paths given relative to where this was started stay so after the cd.
B=$(realpath -m "$B"); S=$(realpath -m "$S"); O=$(realpath "$O"); V=$(realpath "$V")
PACKED=$(realpath -m "$PACKED"); ORT_DYLIB_PATH=$(realpath -m "$ORT_DYLIB_PATH"); cd "$ROOT"
TASKS=${TASKS:-sst2 mrpc}
for T in $TASKS; do
  [ -f $V/$T-ort_dynamic.onnx ] || $PY bench/ort_quantize.py --task $T \
    --model $S/models/minilm-l6-$T/model.onnx --out-dir $V --data $S/data/glue > $V/$T-ort.json
done
for T in $TASKS; do
  M=$S/models/minilm-l6-$T/model.onnx; TR=$S/data/glue/$T/train.tsv
  /usr/bin/time -f "$T auto 0.5: %e s" $B auto $M $O/$T.onnx --task $T --calib-data $TR --max-drop 0.5 --objective speed --time-budget 30m --json > $O/$T.json 2> $O/$T.err
  /usr/bin/time -f "$T auto 1.0: %e s" $B auto $M $O/$T-drop1.onnx --work $O/$T.auto --task $T --calib-data $TR --max-drop 1.0 --objective speed --time-budget 30m --json > $O/$T-drop1.json 2> $O/$T-drop1.err
  for r in 14_obs60_dynamic 15_quant_static_ort; do
    $B run configs/$T/$r.yaml --out $O/hand-$T-$r.onnx -q --json > $O/hand-$T-$r.json
  done
done
for T in $TASKS; do
  BS=32; [ $T = mrpc ] && BS=24
  P60=$PACKED/$T.p60.op.onnx; [ -f $P60 ] || P60=
  $PY bench/paired_speed.py --task $T --data $S/data/glue --batch-size $BS --rounds 5 --json \
    $S/models/minilm-l6-$T/model.onnx $V/$T-ort_dynamic.onnx $O/hand-$T-14_obs60_dynamic.onnx $O/hand-$T-15_quant_static_ort.onnx \
    $P60 $O/$T.onnx $O/$T-drop1.onnx > $O/paired-$T.json 2> $O/paired-$T.err
done
echo done
