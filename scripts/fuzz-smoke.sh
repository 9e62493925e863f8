#!/usr/bin/env bash
# Run every cargo-fuzz target for a short smoke (default 30 s each): gguf_reader, pool_ops,
# tokenizer, model_config, batch_request, kv_policy, sampler, chat_template (whatever
# `cargo fuzz list` reports, so new targets are picked up). Fails on the first crash.
# Installs cargo-fuzz if missing. Usage: scripts/fuzz-smoke.sh [SECONDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs=${1:-30}
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
cd fuzz
targets=$(cargo +nightly fuzz list)
if [ -z "$targets" ]; then
  echo "fuzz-smoke: no fuzz targets" >&2
  exit 1
fi
# Build every target once (optimised, with debug assertions and overflow checks), so the
# time budget below is spent fuzzing, not compiling.
cargo +nightly fuzz build -O -a
for t in $targets; do
  echo "fuzz-smoke: $t for ${secs}s"
  seeds="seeds/$t"
  corpus="corpus/$t"
  mkdir -p "$corpus"
  args=("$corpus")
  [ -d "$seeds" ] && args+=("$seeds")
  # Crashes found earlier and fixed since: replayed first, they must pass.
  [ -d "regressions/$t" ] && args+=("regressions/$t")
  cargo +nightly fuzz run -O -a "$t" "${args[@]}" -- -max_total_time="$secs" -rss_limit_mb=2048 \
    -timeout=10
done
