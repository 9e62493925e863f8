#!/usr/bin/env bash
# Side by side: llama.cpp's llama-bench and `pagoda bench` on the same model, in one run.
#
# Builds llama-bench once from the llama.cpp copy vendored in the PyPI sdist of
# llama-cpp-python==0.3.36 (llama.cpp b11312, the build behind /work/shared/reference),
# cached under target/llamacpp/. Then alternates the two programs REPS times
# (llama.cpp, pagoda, llama.cpp, pagoda, ...) so that load on a shared machine hits both
# alike, and prints per test the median tokens/s of each and the ratio pagoda/llama.cpp.
#
# A developer tool, not part of the test command. Needs: python3 + pip, a C++ compiler,
# cmake (pip-installed if missing), cargo.
#
# Usage: scripts/bench-vs-llamacpp.sh [-m MODEL] [-p 512] [-n 128] [-t 1,2] [-d 0,4096]
#                                     [-R REPS (alternations, default 3)] [-r REPS per call (default 1)]
#                                     [--busy K (K shell loops keep cores busy meanwhile)]
#        scripts/bench-vs-llamacpp.sh --build-only
# Env: LLAMACPP_BENCH=/path/to/llama-bench skips the build (BUILD_JOBS: its -j); PAGODA_BENCH_ARGS adds flags to
# `pagoda bench` (e.g. "--kv-type bf16").
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
model="$here/models/SmolLM2-135M-Instruct.Q4_1.gguf"
p=512 n=128 threads=1,2 depths=0,4096 alternations=3 reps=1 build_only=0 busy=0
while [ $# -gt 0 ]; do
  case "$1" in
    -m) model=$2; shift 2 ;;
    -p) p=$2; shift 2 ;;
    -n) n=$2; shift 2 ;;
    -t) threads=$2; shift 2 ;;
    -d) depths=$2; shift 2 ;;
    -R) alternations=$2; shift 2 ;;
    -r) reps=$2; shift 2 ;;
    --build-only) build_only=1; shift ;;
    --busy) busy=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "bench-vs-llamacpp: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

# shellcheck source=scripts/llamacpp-build.sh
. "$here/scripts/llamacpp-build.sh"
llama_bench=${LLAMACPP_BENCH:-"$llamacpp_build_dir/bin/llama-bench"}

build_llama_bench() {
  llamacpp_build bench-vs-llamacpp llama-bench
}

if [ ! -x "$llama_bench" ]; then
  build_llama_bench
fi
[ "$build_only" = 1 ] && { echo "$llama_bench"; exit 0; }

if [ ! -f "$model" ]; then
  echo "bench-vs-llamacpp: model '$model' missing; run scripts/fetch-model.sh" >&2
  exit 1
fi

echo "bench-vs-llamacpp: building pagoda (release)" >&2
(cd "$here" && cargo build --quiet --release -p pagoda-cli)
pagoda="$here/target/release/pagoda"

out=$(mktemp -d)
spinners=()
cleanup() {
  for pid in "${spinners[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$out"
}
trap cleanup EXIT
# Another process taking a core, as on a shared machine: K busy shell loops.
for _ in $(seq 1 "$busy"); do
  sh -c 'while :; do :; done' &
  spinners+=("$!")
done
[ "$busy" -gt 0 ] && echo "bench-vs-llamacpp: $busy busy loop(s) running: ${spinners[*]}" >&2
for i in $(seq 1 "$alternations"); do
  echo "bench-vs-llamacpp: round $i/$alternations: llama.cpp" >&2
  "$llama_bench" -m "$model" -p "$p" -n "$n" -t "$threads" -d "$depths" -r "$reps" -o jsonl \
    >"$out/llamacpp.$i.jsonl" 2>"$out/llamacpp.$i.err"
  echo "bench-vs-llamacpp: round $i/$alternations: pagoda" >&2
  "$pagoda" bench -m "$model" -p "$p" -n "$n" -t "$threads" -d "$depths" -r "$reps" --json ${PAGODA_BENCH_ARGS:-} \
    >"$out/pagoda.$i.json"
done

python3 - "$out" "$alternations" <<'PY'
import json, statistics, sys, glob
out, rounds = sys.argv[1], int(sys.argv[2])
runs = {}  # (test, threads, depth) -> {"llama.cpp": [...], "pagoda": [...]}
for path in sorted(glob.glob(out + "/llamacpp.*.jsonl")):
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        test = f"pp{r['n_prompt']}" if r["n_gen"] == 0 else f"tg{r['n_gen']}"
        key = (test, int(r["n_threads"]), int(r.get("n_depth", 0)))
        runs.setdefault(key, {"llama.cpp": [], "pagoda": []})["llama.cpp"].append(r["avg_ts"])
for path in sorted(glob.glob(out + "/pagoda.*.json")):
    for r in json.load(open(path)):
        key = (r["test"], int(r["threads"]), int(r["depth"]))
        runs.setdefault(key, {"llama.cpp": [], "pagoda": []})["pagoda"].append(r["tokens_per_s"])
print(f"medians over {rounds} alternating rounds (tokens/s)")
print("| test | threads | depth | llama.cpp t/s | pagoda t/s | pagoda/llama.cpp |")
print("|---|---:|---:|---:|---:|---:|")
for (test, t, d), v in sorted(runs.items(), key=lambda kv: (kv[0][0][:2], kv[0][2], kv[0][1])):
    l = statistics.median(v["llama.cpp"]) if v["llama.cpp"] else float("nan")
    g = statistics.median(v["pagoda"]) if v["pagoda"] else float("nan")
    print(f"| {test} | {t} | {d} | {l:.2f} | {g:.2f} | {g / l:.2f}x |")
print()
print("every round, in order (llama.cpp / pagoda, tokens/s):")
for (test, t, d), v in sorted(runs.items(), key=lambda kv: (kv[0][0][:2], kv[0][2], kv[0][1])):
    pairs = ", ".join(f"{a:.1f} / {b:.1f}" for a, b in zip(v["llama.cpp"], v["pagoda"]))
    print(f"  {test} t{t} d{d}: {pairs}")
PY
