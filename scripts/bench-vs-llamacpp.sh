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

version=0.3.36
cache="$here/target/llamacpp"
src="$cache/llama_cpp_python-$version/vendor/llama.cpp"
build="$cache/build"
llama_bench=${LLAMACPP_BENCH:-"$build/bin/llama-bench"}

build_llama_bench() {
  mkdir -p "$cache"
  if [ ! -d "$src" ]; then
    echo "bench-vs-llamacpp: fetching the llama-cpp-python==$version sdist from PyPI" >&2
    # --no-binary for this package only: with :all: pip would also build the sdist's
    # build dependencies (cmake among them) from source just to read its metadata.
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
      --no-binary llama-cpp-python "llama-cpp-python==$version" -d "$cache" >&2
    tar -xzf "$cache/llama_cpp_python-$version.tar.gz" -C "$cache"
  fi
  if ! command -v cmake >/dev/null; then
    echo "bench-vs-llamacpp: cmake missing; pip install cmake" >&2
    python3 -m pip install --quiet --disable-pip-version-check cmake >&2
    export PATH="$HOME/.local/bin:$PATH"
  fi
  # Not GGML_NATIVE=ON: on a Xeon with AMX that build segfaults in ggml_backend_amx_mul_mat.
  # The same instruction sets but AMX, spelled out; AVX-VNNI (the VEX form) only where
  # /proc/cpuinfo lists it: some AVX-512 Xeons have only the EVEX form (SIGILL otherwise).
  avx_vnni=OFF
  grep -qw avx_vnni /proc/cpuinfo 2>/dev/null && avx_vnni=ON
  echo "bench-vs-llamacpp: building llama-bench (Release, GGML_NATIVE=OFF, AVX-512 VNNI/BF16/VBMI, AVX_VNNI=$avx_vnni, no AMX) in $build" >&2
  cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
    -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=ON \
    -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX_VNNI=$avx_vnni \
    -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >"$cache/cmake.log" 2>&1
  cmake --build "$build" --config Release --target llama-bench -j "${BUILD_JOBS:-$(nproc)}" >>"$cache/cmake.log" 2>&1
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
