#!/usr/bin/env bash
# Runs each fuzz target for a bounded time, one at a time, in one process (one core), on a
# working corpus (fuzz/corpus/<target>, git-ignored) seeded from fuzz/seeds/<target>.
#   fuzz/run_all.sh [seconds per target, default 300] [targets...]
# Logs go to fuzz/logs/<target>.log (git-ignored); crashes to fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-300}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(onnx_decode tsv_reader prune_plan graph_edit)
mkdir -p logs
cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
  # The committed seeds are copied into the working corpus, which is the only folder libFuzzer
  # gets (and writes to): the seeds stay as examples/fuzz_seeds.rs wrote them.
  mkdir -p "corpus/$t"
  cp -n "seeds/$t"/* "corpus/$t"/ || true
  echo "== $t: ${secs}s" >&2
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"logs/$t.log" 2>&1 && echo "   $t: no crash" >&2 || echo "   $t: FAILED (see logs/$t.log)" >&2
  grep -E "^stat::number_of_executed_units|^stat::average_exec_per_sec|^stat::peak_rss_mb|Done [0-9]+ runs" "logs/$t.log" >&2 || true
done
