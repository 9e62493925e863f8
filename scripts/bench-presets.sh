#!/usr/bin/env bash
# Every llama.cpp quantization preset of the default model, pagoda vs llama.cpp side by side.
#
# For each preset: makes the file with `pagoda quantize` (byte-identical to llama-quantize,
# cached in target/presets/), runs scripts/bench-vs-llamacpp.sh on it (llama-bench and
# `pagoda bench` alternating, medians of REPS rounds), and reports per preset pp and tg
# tokens/s of both, the ratios, and the share of the read bandwidth the tg figure uses:
#
#   weight bytes per token = bytes of every matrix a decoded token multiplies (all 2-D
#                            tensors but token_embd, plus token_embd when the LM head is tied)
#   bandwidth fraction     = weight bytes per token × pagoda tg t/s ÷ read bandwidth
#
# The read bandwidth is measured once with `cargo bench --bench bandwidth` at the same thread
# count (or given with --bandwidth GBPS, in 10^9 bytes/s).
#
# A developer tool, not part of the test command; benchmark on a quiet machine.
#
# Usage: scripts/bench-presets.sh [-p 512] [-n 128] [-t 2] [-R 3] [--bandwidth GBPS]
#                                 [--presets Q4_0,Q4_K_M,...]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
p=512 n=128 t=2 rounds=3 bw="" presets="Q4_0,Q4_1,Q5_0,Q5_1,Q8_0,Q2_K,Q3_K_S,Q3_K_M,Q3_K_L,Q4_K_S,Q4_K_M,Q5_K_S,Q5_K_M,Q6_K,IQ4_NL,IQ4_XS,F16,BF16"
while [ $# -gt 0 ]; do
  case "$1" in
    -p) p=$2; shift 2 ;;
    -n) n=$2; shift 2 ;;
    -t) t=$2; shift 2 ;;
    -R) rounds=$2; shift 2 ;;
    --bandwidth) bw=$2; shift 2 ;;
    --presets) presets=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench-presets: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

cd "$here"
scripts/fetch-model.sh >/dev/null
base="$here/models/SmolLM2-135M-Instruct.Q4_1.gguf"
cargo build --release --locked -p pagoda-cli >&2
pagoda="$here/target/release/pagoda"
scripts/bench-vs-llamacpp.sh --build-only >&2
out="$here/target/presets"
mkdir -p "$out"

if [ -z "$bw" ]; then
  echo "bench-presets: measuring read bandwidth (${t} threads)" >&2
  log="$out/bandwidth.log"
  cargo bench --locked --bench bandwidth -- --warm-up-time 1 --measurement-time 3 "${t}t" >"$log" 2>&1
  # criterion: "thrpt:  [a GiB/s b GiB/s c GiB/s]" -> the middle estimate, in 10^9 bytes/s.
  bw=$(python3 - "$log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
m = re.findall(r"thrpt:\s*\[\S+ \S+ (\S+) (\S+)", text)
if not m:
    sys.exit("bench-presets: no throughput in the bandwidth bench output")
v, unit = m[-1]
scale = {"GiB/s": 2**30, "MiB/s": 2**20, "TiB/s": 2**40}[unit]
print(f"{float(v) * scale / 1e9:.2f}")
PY
)
fi
echo "bench-presets: read bandwidth ${bw} GB/s" >&2

summary="$out/summary.md"
{
  echo "pp${p} and tg${n} at -t ${t}, medians of ${rounds} alternating rounds; read bandwidth ${bw} GB/s"
  echo
  echo "| preset | types | llama.cpp pp | pagoda pp | pp ratio | llama.cpp tg | pagoda tg | tg ratio | weight MB/token | bandwidth fraction |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
} >"$summary"
IFS=, read -ra list <<<"$presets"
for preset in "${list[@]}"; do
  file="$out/SmolLM2-135M-Instruct.$preset.gguf"
  if [ ! -f "$file" ]; then
    "$pagoda" quantize --allow-requantize "$base" "$file" "$preset" 2>"$out/$preset.quantize.log"
  fi
  echo "bench-presets: $preset" >&2
  scripts/bench-vs-llamacpp.sh -m "$file" -p "$p" -n "$n" -t "$t" -d 0 -R "$rounds" >"$out/$preset.bench.md"
  "$pagoda" inspect -m "$file" --json >"$out/$preset.inspect.json"
  python3 - "$preset" "$out/$preset.bench.md" "$out/$preset.inspect.json" "$bw" "$p" "$n" >>"$summary" <<'PY'
import json, re, sys
preset, bench, inspect, bw, p, n = sys.argv[1:]
info = json.load(open(inspect))
tensors = info["tensors"]
names = {t["name"] for t in tensors}
tied = "output.weight" not in names
per_token = sum(
    t["n_bytes"] for t in tensors
    if len(t["shape"]) == 2 and (t["name"] != "token_embd.weight" or tied)
)
rows = {}
for line in open(bench):
    m = re.match(r"\| (pp\d+|tg\d+) \| \d+ \| 0 \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \|", line)
    if m:
        rows[m.group(1)] = (float(m.group(2)), float(m.group(3)), float(m.group(4)))
pp, tg = rows.get(f"pp{p}"), rows.get(f"tg{n}")
if not pp or not tg:
    sys.exit(f"bench-presets: {preset}: no pp{p}/tg{n} rows in {bench}")
types = ", ".join(f"{t['count']}×{t['type']}" for t in info["types"])
frac = per_token * tg[1] / (float(bw) * 1e9)
print(f"| {preset} | {types} | {pp[0]:.1f} | {pp[1]:.1f} | {pp[2]:.2f}x | {tg[0]:.1f} | {tg[1]:.1f} | {tg[2]:.2f}x | {per_token / 1e6:.1f} | {frac:.2f} |")
PY
done
cat "$summary"
