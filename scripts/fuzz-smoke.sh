#!/usr/bin/env bash
# Run every cargo-fuzz target for a short smoke (default 30 s each).
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
for t in $targets; do
  echo "fuzz-smoke: $t for ${secs}s"
  seeds="seeds/$t"
  corpus="corpus/$t"
  mkdir -p "$corpus"
  args=("$corpus")
  [ -d "$seeds" ] && args+=("$seeds")
  cargo +nightly fuzz run "$t" "${args[@]}" -- -max_total_time="$secs" -rss_limit_mb=2048
done
