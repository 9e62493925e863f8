#!/usr/bin/env bash
# pagoda serve vs llama.cpp's llama-server under the same HTTP load, plus two pagoda-only
# measurements (server overhead, prefix cache). A developer tool, not part of the tests.
#
# Usage: scripts/bench-server.sh [-m MODEL] [-c CLIENTS_LIST (default 1,4,16)]
#                                [-p PROMPT_TOKENS (128)] [-n GEN_TOKENS (128)]
#                                [-R ROUNDS (3)] [-q REQUESTS per level and round (32)]
#                                [-o OUT.md] [--no-overhead] [--no-prefix]
# Env: LLAMA_SERVER=/path/to/llama-server skips its build (BUILD_JOBS: the build's -j);
#      THREADS (default 2): -t of both servers and of `pagoda bench`.
#
# Servers (both on 127.0.0.1, on free ports, stopped on exit):
#   pagoda serve -m MODEL -t 2 --port P --ignore-eos
#   llama-server -m MODEL -t 2 -np 16 -c 16384 --cont-batching --port P2 --no-webui
#     (16 slots of 1024 tokens each; defaults otherwise: f16 KV cache as pagoda's, flash
#     attention "auto", batch 2048 / ubatch 512)
#
# Measured, for each load level C (-c): C client threads, each sending streaming
# /v1/completions requests one after another (max(2, Q/C) each), with a PROMPT_TOKENS-token
# prompt (a distinct 6-digit id then filler, calibrated with `pagoda tokenize`, so no
# prefix is shared), max_tokens GEN_TOKENS, temperature 0 and "ignore_eos": true (pagoda:
# --ignore-eos), so every request generates exactly GEN_TOKENS tokens. Per request: TTFT
# (send -> first SSE chunk with text) and inter-token latencies (ITL, between chunks); per
# round: aggregate generated tokens / wall time. ROUNDS rounds alternate the servers
# (pagoda, llama-server, pagoda, ...); the table gives medians over rounds of the aggregate
# tok/s and of each round's TTFT and ITL p50/p99, and the ratios pagoda/llama-server.
# Unless turned off:
#   overhead (--no-overhead skips it; needs 16 in -c): `pagoda bench --batch 16 -p P -n N`
#     (the engine alone: 16 prompts prefilled, then decoded; generated tokens / time), run
#     once per round right after the 16-client rounds, vs pagoda serve's aggregate tok/s at
#     16 clients, medians over rounds (target >= 95%).
#   prefix cache (--no-prefix skips it): 8 chat requests sharing a ~500-token system prompt, one after another after a
#     warm-up, TTFT on pagoda serve (prefix cache on) vs a second pagoda serve started with
#     --no-prefix-cache, alternated round by round (target: >= 3x lower TTFT with the cache).
#
# llama.cpp: b11312 from the llama-cpp-python==0.3.36 sdist, built by scripts/llamacpp-build.sh
# with: -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON
# -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON
# -DGGML_AVX512_VBMI=ON -DGGML_AVX_VNNI=ON|OFF (as /proc/cpuinfo) -DLLAMA_CURL=OFF
# -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF
# -DLLAMA_USE_PREBUILT_UI=OFF (no AMX: that path segfaults here; no web UI download).
# Needs python3 (standard library only), cargo, a C++ compiler, cmake (pip-installed if missing).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
model="$here/models/SmolLM2-135M-Instruct.Q4_1.gguf"
levels=1,4,16 p=128 n=128 rounds=3 requests=32 out_md="" do_overhead=1 do_prefix=1
threads=${THREADS:-2}
usage() { sed -n '5,11p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "bench-server: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    -m) model=$2; shift 2 ;;
    -c) levels=$2; shift 2 ;;
    -p) p=$2; shift 2 ;;
    -n) n=$2; shift 2 ;;
    -R) rounds=$2; shift 2 ;;
    -q) requests=$2; shift 2 ;;
    -o) out_md=$2; shift 2 ;;
    --no-overhead) do_overhead=0; shift ;;
    --no-prefix) do_prefix=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done
for v in "$p" "$n" "$rounds" "$requests" "$threads"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || die "'$v' is not a positive integer"
done
[[ $levels =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "-c takes a list like 1,4,16"
[ -f "$model" ] || die "model '$model' missing; run scripts/fetch-model.sh"
[ -z "$out_md" ] || out_md=$(cd "$(dirname "$out_md")" && pwd)/$(basename "$out_md")
load=(python3 "$here/scripts/bench_server_load.py")

# shellcheck source=scripts/llamacpp-build.sh
. "$here/scripts/llamacpp-build.sh"
llama_server=${LLAMA_SERVER:-"$llamacpp_build_dir/bin/llama-server"}
if [ ! -x "$llama_server" ]; then
  llamacpp_build bench-server llama-server
  [ -x "$llama_server" ] || die "building llama-server failed (see $llamacpp_cache/cmake.log)"
fi
echo "bench-server: building pagoda (release)" >&2
(cd "$here" && cargo build --quiet --release -p pagoda-cli)
pagoda="$here/target/release/pagoda"

work=$(mktemp -d)
pids=() child=""
# run CMD...: runs CMD in the background and waits for it, so that a signal to this script
# is handled at once (the trap then stops CMD too) rather than after CMD ends.
run() {
  "$@" &
  child=$!
  local rc=0
  wait "$child" || rc=$?
  child=""
  return "$rc"
}
stop_server() { # PID: SIGTERM, up to 15 s (pagoda's grace is 10 s), then SIGKILL
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local pid
  if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null || true; wait "$child" 2>/dev/null || true; fi
  for pid in "${pids[@]}"; do stop_server "$pid"; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# start_server NAME LOG CMD...: starts CMD in the background, waits up to 60 s for /health;
# sets $started_pid.
start_server() {
  local name=$1 log=$2 port
  shift 2
  port=${*: -1}
  "$@" >"$log" 2>&1 &
  started_pid=$!
  pids+=("$started_pid")
  echo "bench-server: started $name (pid $started_pid) on port $port, waiting for /health" >&2
  local rc=0
  run "${load[@]}" health --url "http://127.0.0.1:$port" --pid "$started_pid" --timeout 60 || rc=$?
  if [ "$rc" != 0 ]; then
    echo "bench-server: last lines of $name's log:" >&2
    tail -n 20 "$log" >&2 || true
    [ "$rc" = 2 ] && die "$name exited before becoming healthy: $*"
    die "$name did not become healthy within 60 s: $*"
  fi
}

loadavg=$(cut -d' ' -f1 /proc/loadavg)
echo "bench-server: calibrating a $p-token prompt with pagoda tokenize" >&2
run "${load[@]}" prompts --pagoda "$pagoda" -m "$model" -p "$p" --out "$work/prompts.json"

pagoda_port=$(free_port)
pagoda_cmd=("$pagoda" serve -m "$model" -t "$threads" --ignore-eos --port "$pagoda_port")
start_server "pagoda serve" "$work/pagoda.log" "${pagoda_cmd[@]}"
llama_port=$(free_port)
llama_cmd=("$llama_server" -m "$model" -t "$threads" -np 16 -c 16384 --cont-batching --no-webui
  --port "$llama_port")
start_server llama-server "$work/llama.log" "${llama_cmd[@]}"

url_of() { if [ "$1" = pagoda ]; then echo "http://127.0.0.1:$pagoda_port"; else echo "http://127.0.0.1:$llama_port"; fi; }
round_no=0
IFS=, read -r -a level_list <<<"$levels"
for c in "${level_list[@]}"; do
  per_client=$(( (requests + c - 1) / c ))
  [ "$per_client" -ge 2 ] || per_client=2
  for r in $(seq 1 "$rounds"); do
    round_no=$((round_no + 1))
    for key in pagoda llama; do
      echo "bench-server: $c clients, round $r/$rounds: $key ($per_client requests per client)" >&2
      # The same prompt ids for both servers in a round; new ones every round.
      run "${load[@]}" load --url "$(url_of "$key")" --clients "$c" --requests "$per_client" \
        --prompt-tokens "$p" --gen-tokens "$n" --prompts "$work/prompts.json" \
        --first $((round_no * 10000)) --out "$work/$key.c$c.r$r.json" ||
        die "the load on $key failed ($c clients, round $r)"
    done
    if [ "$do_overhead" = 1 ] && [ "$c" = 16 ]; then
      # The engine alone in the same round, so that other load on the machine hits both alike.
      echo "bench-server: 16 clients, round $r/$rounds: engine alone (pagoda bench --batch 16 -p $p -n $n -t $threads -r 1)" >&2
      run "$pagoda" bench -m "$model" --batch 16 -p "$p" -n "$n" -t "$threads" -r 1 -o jsonl \
        >"$work/overhead.r$r.json" || die "pagoda bench --batch 16 failed"
    fi
  done
done

system_tokens=0
if [ "$do_prefix" = 1 ]; then
  nocache_port=$(free_port)
  start_server "pagoda serve --no-prefix-cache" "$work/pagoda-nocache.log" \
    "$pagoda" serve -m "$model" -t "$threads" --no-prefix-cache --port "$nocache_port"
  nocache_pid=$started_pid
  for r in $(seq 1 "$rounds"); do
    for key in cache nocache; do
      port=$pagoda_port
      [ "$key" = cache ] || port=$nocache_port
      echo "bench-server: prefix cache, round $r/$rounds: $key" >&2
      run "${load[@]}" prefix --url "http://127.0.0.1:$port" --prompts "$work/prompts.json" \
        --requests 8 --round "$r" --out "$work/prefix.$key.r$r.json" ||
        die "the prefix-cache requests failed ($key, round $r)"
    done
  done
  stop_server "$nocache_pid"
  system_tokens=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["system_tokens"])' "$work/prompts.json")
fi

machine=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
commit=$(git -C "$here" rev-parse --short HEAD)
git -C "$here" diff --quiet HEAD -- Cargo.toml Cargo.lock core cpu cli capi || commit="$commit (+ uncommitted changes in the working tree)"
# shellcheck disable=SC2154 # llamacpp_cmake_flags comes from scripts/llamacpp-build.sh
"${load[@]}" report --dir "$work" --levels "$levels" --rounds "$rounds" --prompt-tokens "$p" \
  --gen-tokens "$n" --prefix-requests 8 --system-tokens "$system_tokens" \
  --loadavg "$loadavg" --date "$(date -u +%Y-%m-%dT%H:%MZ)" --machine "${machine:-unknown}" --cores "$(nproc)" \
  --model "$(basename "$model")" --commit "$commit" \
  --llamacpp "b11312 (llama-cpp-python==$llamacpp_version sdist), $("$llama_server" --version 2>&1 | grep -m1 -i version || true)" \
  --llamacpp-flags "$(echo "$llamacpp_cmake_flags" | tr -s ' ')" \
  --pagoda-cmd "pagoda serve -m $(basename "$model") -t $threads --ignore-eos" \
  --llama-cmd "llama-server -m $(basename "$model") -t $threads -np 16 -c 16384 --cont-batching --no-webui" \
  --out "$out_md"
