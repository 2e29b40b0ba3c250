#!/usr/bin/env bash
# Where the time goes, before and with the Attention op (bench/gemm_limit.py; one profiled pass, noisy: shares, not speed).
set -euo pipefail
P=/work/venv-bench/bin/python; S=/work/shared; O=/work/packed
for T in sst2 mrpc; do
  extra=""; [ $T = mrpc ] && extra="$O/mrpc.p40.op.onnx"
  $P /work/main/bench/gemm_limit.py --task $T --data $S/data/glue --tokenizer $S/models/minilm-l6-$T/tokenizer.json \
    --json $O/limit-$T.json $O/$T.p60.packed.onnx $O/$T.p60.op.onnx $extra 2>/dev/null
done > $O/limit.txt
