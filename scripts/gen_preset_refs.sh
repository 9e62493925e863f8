#!/usr/bin/env bash
# Regenerates tests/data/llamacpp/presets.json: llama.cpp's figures for every quantization
# preset made from the default model (the reference tests/model_presets.rs holds pagoda to).
#
# For each preset P (Q4_0 … BF16, below):
#   llama-quantize --allow-requantize models/SmolLM2-135M-Instruct.Q4_1.gguf WORK/SmolLM2-135M-Instruct-P.gguf P
#     -> the file's SHA-256, size, general.file_type and per-tensor type counts (read by the
#        small GGUF parser below, not by pagoda);
#   llama-perplexity -m FILE -f tests/data/text/GPL-3 -c 512 -t 2
#     -> final PPL, ±, chunks, running PPL per chunk (the flags of perplexity_dev.json's -c 512
#        run; its default batch size 2048 = 4 sequences of 512 per batch);
#   scripts/llamacpp_greedy FILE 48 PROMPTS…
#     -> greedy_dev.json's procedure (1 thread, whole prompt in one llama_decode, 48 argmax
#        steps fed back one token at a time, no stop at end-of-generation) on its 4 prompts.
# Where llama.cpp repacks some of the file's weights into its interleaved x86 layouts (its load
# log shows a CPU_REPACK buffer: Q4_0, Q4_K, Q2_K, IQ4_NL tensors with a multiple of 8 rows), the
# perplexity and greedy runs are repeated with --no-repack (use_extra_bufts = false) and
# recorded under "no_repack"; elsewhere the two are the same program and run once.
#
# Before the presets, the greedy tool is run on the Q4_1 model itself and must reproduce
# tests/data/llamacpp/greedy_dev.json's ids, runner-ups and logits exactly.
#
# llama.cpp b11312 is built (if needed) by scripts/llamacpp-build.sh under target/llamacpp/,
# the flags of scripts/bench-vs-llamacpp.sh. A developer tool, not part of the test command:
# the perplexity runs take ~1–2.5 minutes each on 2 cores (about an hour in all).
# Needs: python3 + pip, a C++ compiler, cmake.
#
# Usage: scripts/gen_preset_refs.sh [--resume]
#   --resume  keep the finished logs of an earlier run in WORK (default: start afresh)
# Env: PRESETS_DIR=WORK (default /tmp/presets), PRESETS="Q4_0 Q8_0" (a subset; the JSON then
#      holds only those), BUILD_JOBS (the build's -j).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/llamacpp-build.sh
. "$here/scripts/llamacpp-build.sh"

resume=0
case "${1:-}" in
  --resume) resume=1 ;;
  "") ;;
  *) echo "gen_preset_refs: unknown argument '$1' (usage: scripts/gen_preset_refs.sh [--resume])" >&2; exit 2 ;;
esac

model_rel=models/SmolLM2-135M-Instruct.Q4_1.gguf
model="$here/$model_rel"
text_rel=tests/data/text/GPL-3
text="$here/$text_rel"
out_json="$here/tests/data/llamacpp/presets.json"
presets=${PRESETS:-"Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K IQ4_NL IQ4_XS F16 BF16"}
work=${PRESETS_DIR:-/tmp/presets}
bin="$llamacpp_build_dir/bin"
n_predict=48

"$here/scripts/fetch-model.sh"

if [ ! -x "$bin/llama-quantize" ] || [ ! -x "$bin/llama-perplexity" ] || [ ! -f "$bin/libllama.so" ]; then
  llamacpp_build gen_preset_refs llama-quantize llama-perplexity llama
fi

mkdir -p "$work"
if [ "$resume" = 0 ]; then
  rm -f "$work"/*.log "$work"/*.jsonl "$work"/*.gguf
fi

echo "gen_preset_refs: compiling scripts/llamacpp_greedy.cpp" >&2
greedy="$work/llamacpp_greedy"
g++ -O2 -std=c++17 "$here/scripts/llamacpp_greedy.cpp" -I "$llamacpp_src/include" \
  -I "$llamacpp_src/ggml/include" -L "$bin" -lllama -lggml -lggml-base -Wl,-rpath,"$bin" -o "$greedy"

# The golden prompts, one file each (exact bytes, no trailing newline).
python3 - "$here/tests/data/llamacpp/greedy_dev.json" "$work" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for i, c in enumerate(d["cases"]):
    open(f"{sys.argv[2]}/prompt{i}.txt", "w", encoding="utf-8").write(c["prompt"])
PY
prompts=$(ls "$work"/prompt[0-9]*.txt | sort -V)

echo "gen_preset_refs: checking the greedy tool against greedy_dev.json (Q4_1 model)" >&2
# shellcheck disable=SC2086
"$greedy" "$model" "$n_predict" $prompts >"$work/check_greedy_dev.jsonl"
python3 - "$here/tests/data/llamacpp/greedy_dev.json" "$work/check_greedy_dev.jsonl" <<'PY'
import json, sys
want = json.load(open(sys.argv[1]))["cases"]
got = [json.loads(l) for l in open(sys.argv[2])]
assert len(got) == len(want), (len(got), len(want))
for w, g in zip(want, got):
    for k in ("prompt_ids", "generated_ids", "argmax_logits", "runner_up_ids", "runner_up_logits"):
        if w[k] != g[k]:
            sys.exit(f"gen_preset_refs: the greedy tool does not reproduce greedy_dev.json: {w['prompt']!r} {k}")
    text = bytes.fromhex("".join(g["pieces_hex"])).decode("utf-8", "replace")
    if text != w["generated_text"]:
        sys.exit(f"gen_preset_refs: generated text differs for {w['prompt']!r}")
print("gen_preset_refs: greedy tool reproduces greedy_dev.json exactly (ids, runner-ups, logits)", file=sys.stderr)
PY

name=$(basename "$model_rel" .Q4_1.gguf)
file_of() { echo "$work/$name-$1.gguf"; }
complete_ppl() { [ -f "$1" ] && grep -q "Final estimate: PPL" "$1"; }

for p in $presets; do
  f=$(file_of "$p")
  if [ ! -f "$f" ] || ! grep -q "quantize time" "$work/$p.quantize.log" 2>/dev/null; then
    echo "gen_preset_refs: $p: llama-quantize" >&2
    "$bin/llama-quantize" --allow-requantize "$model" "$f" "$p" >"$work/$p.quantize.log" 2>&1 \
      || { cat "$work/$p.quantize.log" >&2; exit 1; }
  fi
  if [ ! -s "$work/$p.greedy.jsonl" ]; then
    echo "gen_preset_refs: $p: greedy" >&2
    # shellcheck disable=SC2086
    "$greedy" "$f" "$n_predict" $prompts >"$work/$p.greedy.jsonl"
  fi
done

# Perplexity: every preset as llama.cpp runs it by default first, then the --no-repack runs.
for p in $presets; do
  if ! complete_ppl "$work/$p.ppl.log"; then
    echo "gen_preset_refs: $p: llama-perplexity -c 512 -t 2 ($(date +%T))" >&2
    "$bin/llama-perplexity" -m "$(file_of "$p")" -f "$text" -c 512 -t 2 >"$work/$p.ppl.log" 2>&1 \
      || { tail -20 "$work/$p.ppl.log" >&2; exit 1; }
  fi
done
for p in $presets; do
  # Which weights llama.cpp repacks: its load log (llama-perplexity's log leaves it out).
  LLAMACPP_GREEDY_VERBOSE=1 "$greedy" "$(file_of "$p")" 0 "$work/prompt0.txt" 2>"$work/$p.load.log" >/dev/null
  grep -q "CPU_REPACK model buffer size" "$work/$p.load.log" || continue
  if ! complete_ppl "$work/$p.ppl_norepack.log"; then
    echo "gen_preset_refs: $p: llama-perplexity -c 512 -t 2 --no-repack ($(date +%T))" >&2
    "$bin/llama-perplexity" -m "$(file_of "$p")" -f "$text" -c 512 -t 2 --no-repack \
      >"$work/$p.ppl_norepack.log" 2>&1 || { tail -20 "$work/$p.ppl_norepack.log" >&2; exit 1; }
  fi
  if [ ! -s "$work/$p.greedy_norepack.jsonl" ]; then
    echo "gen_preset_refs: $p: greedy --no-repack" >&2
    # shellcheck disable=SC2086
    "$greedy" "$(file_of "$p")" "$n_predict" --no-repack $prompts >"$work/$p.greedy_norepack.jsonl"
  fi
done

# The flags the binaries were really built with (the cache may predate this script).
build_flags=""
for k in CMAKE_BUILD_TYPE GGML_NATIVE GGML_AVX2 GGML_FMA GGML_F16C GGML_BMI2 GGML_AVX512 \
         GGML_AVX512_VNNI GGML_AVX512_BF16 GGML_AVX512_VBMI GGML_AVX_VNNI GGML_AMX_TILE GGML_AMX_INT8 \
         GGML_AMX_BF16 LLAMA_CURL LLAMA_OPENSSL LLAMA_BUILD_TESTS LLAMA_BUILD_SERVER; do
  build_flags="$build_flags -D$k=$(grep -E "^$k:" "$llamacpp_build_dir/CMakeCache.txt" | cut -d= -f2-)"
done
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
machine="$cpu, $(nproc) cores ($(grep -m1 '^flags' /proc/cpuinfo | grep -ow 'avx512f\|avx512_vnni\|avx512_bf16\|avx512vbmi\|amx_tile\|avx_vnni' | tr '\n' ' ' | sed 's/ $//')), $(uname -sr)"

python3 - "$work" "$out_json" "$model" "$model_rel" "$text" "$text_rel" "$build_flags" "$machine" \
  "$presets" "$here/tests/data/llamacpp/greedy_dev.json" "$name" <<'PY'
import hashlib, json, re, struct, sys

(work, out_json, model, model_rel, text, text_rel, build_flags, machine, presets, greedy_dev,
 name) = sys.argv[1:]
presets = presets.split()

# ggml type ids (ggml.h, enum ggml_type) -> names.
GGML = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
        10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
        17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
        23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16"}

def gguf_tensors(path):
    """(metadata {key: scalar}, [(name, type name)]) from a GGUF v3 file's header."""
    f = open(path, "rb")
    rd = lambda fmt: struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]
    assert f.read(4) == b"GGUF" and rd("I") == 3
    n_tensors, n_kv = rd("Q"), rd("Q")
    rs = lambda: f.read(rd("Q")).decode("utf-8")
    scal = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    def value(t):
        if t in scal:
            return rd(scal[t])
        if t == 8:
            return rs()
        if t == 9:
            et, n = rd("I"), rd("Q")
            return [value(et) for _ in range(n)]
        raise ValueError(f"GGUF value type {t}")
    meta = {}
    for _ in range(n_kv):
        k = rs()
        v = value(rd("I"))
        if not isinstance(v, list):
            meta[k] = v
    tensors = []
    for _ in range(n_tensors):
        tn = rs()
        nd = rd("I")
        for _ in range(nd):
            rd("Q")
        ty = rd("I")
        rd("Q")
        tensors.append((tn, GGML.get(ty, str(ty))))
    return meta, tensors

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()

def ppl(path):
    log = open(path, encoding="utf-8", errors="replace").read()
    m = re.search(r"calculating perplexity over (\d+) chunks, n_ctx=(\d+), batch_size=(\d+), n_seq=(\d+)", log)
    fin = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
    running = [float(v) for v in re.findall(r"\[\d+\]([0-9.]+|nan|inf),", log)]
    assert m and fin and len(running) == int(m.group(1)), path
    return {"ppl": float(fin.group(1)), "ppl_pm": float(fin.group(2)), "n_chunks": int(m.group(1)),
            "n_ctx": int(m.group(2)), "batch_size": int(m.group(3)), "n_seq_per_batch": int(m.group(4)),
            "running_ppl_per_chunk": running}

def repacked(path):
    """{layout: tensor count} of the weights llama.cpp repacks at load (its verbose log)."""
    layouts = {}
    for layout in re.findall(r"repack: repack tensor \S+ with (\S+)", open(path).read()):
        layouts[layout] = layouts.get(layout, 0) + 1
    return dict(sorted(layouts.items()))

golden = json.load(open(greedy_dev))["cases"]
EOG = {0, 2}  # <|endoftext|>, <|im_end|>

def greedy(path):
    cases = []
    for w, l in zip(golden, open(path)):
        g = json.loads(l)
        assert g["prompt_ids"] == w["prompt_ids"], path
        text = bytes.fromhex("".join(g["pieces_hex"])).decode("utf-8", "replace")
        eog = next((i for i, t in enumerate(g["generated_ids"]) if t in EOG), None)
        margins = [round(a - b, 6) for a, b in zip(g["argmax_logits"], g["runner_up_logits"])]
        low = next((i for i, m in enumerate(margins) if m < 0.1), None)
        cases.append({"kind": w["kind"], "prompt": w["prompt"], "prompt_ids": g["prompt_ids"],
                      "generated_ids": g["generated_ids"], "generated_text": text,
                      "first_eog_index": eog,
                      "generated_text_until_eog": text if eog is None else
                      bytes.fromhex("".join(g["pieces_hex"][:eog])).decode("utf-8", "replace"),
                      "argmax_logits": g["argmax_logits"], "runner_up_ids": g["runner_up_ids"],
                      "runner_up_logits": g["runner_up_logits"], "top1_top2_margin": margins,
                      "first_step_margin_below_0_1": low})
    assert len(cases) == len(golden), path
    return cases

import os
out = {
    "about": "llama.cpp's figures for every quantization preset made from the default model by "
             "llama-quantize: the file's SHA-256 and type mix, perplexity on tests/data/text/GPL-3 at -c 512, "
             "and greedy ids for greedy_dev.json's prompts. tests/model_presets.rs holds pagoda to it. "
             "Regenerate with scripts/gen_preset_refs.sh.",
    "provenance": {
        "llama_cpp_build": "b11312",
        "llama_cpp_commit": "0c1e57098bba43ac29e6e3b677cdceebdd22334f",
        "llama_cpp_source": "vendor/llama.cpp of the PyPI sdist llama-cpp-python==0.3.36",
        "build": "cmake" + build_flags + "; cmake --build --target llama-quantize llama-perplexity llama "
                 "(scripts/llamacpp-build.sh; not GGML_NATIVE=ON, whose AMX matmul segfaults on this CPU)",
        "machine": machine + "; shared with other jobs during the runs (timings meaningless, results are not)",
        "input": {"file": model_rel, "sha256": sha256(model)},
        "text": {"file": text_rel, "sha256": sha256(text)},
        "commands": {
            "quantize": f"llama-quantize --allow-requantize {model_rel} {name}-PRESET.gguf PRESET",
            "perplexity": f"llama-perplexity -m {name}-PRESET.gguf -f {text_rel} -c 512 -t 2",
            "perplexity_no_repack": f"llama-perplexity -m {name}-PRESET.gguf -f {text_rel} -c 512 -t 2 --no-repack",
            "greedy": f"llamacpp_greedy {name}-PRESET.gguf 48 PROMPT_FILE... (scripts/llamacpp_greedy.cpp "
                      "against this build's libllama; --no-repack for the no_repack runs)",
        },
        "perplexity_method": "as tests/data/llamacpp/perplexity_dev.json's -c 512 run: the text tokenized "
                             "without BOS, floor(n_tokens/512) chunks each from an empty KV cache, the second "
                             "half of each chunk scored; default batch size 2048 (4 sequences per batch), "
                             "flash attention auto, KV f16, 2 threads",
        "greedy_procedure": json.load(open(greedy_dev))["procedure"] + " The runner-up is the largest "
                            "logit other than the argmax (first index on ties); top1_top2_margin = "
                            "argmax_logit - runner_up_logit rounded to 6 decimals.",
        "greedy_tool_check": "before the presets, llamacpp_greedy on the Q4_1 model reproduced "
                             "tests/data/llamacpp/greedy_dev.json exactly: prompt ids, generated ids, "
                             "runner-up ids, argmax and runner-up logits (all 4 prompts, 48 steps)",
        "repack": "llama.cpp's CPU backend repacks Q4_0, Q4_K, Q2_K (AVX-512) and IQ4_NL weights with a "
                  "multiple of 8 rows into interleaved layouts on x86 (ggml-cpu/repack.cpp), which sums in "
                  "another order than the plain ggml_vec_dot_* kernels. The figures at the top level of each "
                  "preset are llama.cpp's default (repacking on); repacked_by_llamacpp counts the tensors "
                  "repacked per layout (from libllama's load log). Where there are any, the runs were repeated "
                  "with --no-repack (llama_model_params.use_extra_bufts = false) under \"no_repack\"; elsewhere "
                  "no weight is repacked and the two are the same computation.",
    },
    "presets": {},
}

for p in presets:
    f = f"{work}/{name}-{p}.gguf"
    meta, tensors = gguf_tensors(f)
    counts = {}
    for _, t in tensors:
        counts[t] = counts.get(t, 0) + 1
    entry = {
        "file": f"{name}-{p}.gguf",
        "sha256": sha256(f),
        "bytes": os.path.getsize(f),
        "file_type": meta.get("general.file_type"),
        "n_tensors": len(tensors),
        "type_counts": dict(sorted(counts.items())),
        "repacked_by_llamacpp": repacked(f"{work}/{p}.load.log"),
        "perplexity_c512": ppl(f"{work}/{p}.ppl.log"),
        "greedy": greedy(f"{work}/{p}.greedy.jsonl"),
    }
    if entry["repacked_by_llamacpp"]:
        nr = {"perplexity_c512": ppl(f"{work}/{p}.ppl_norepack.log"),
              "greedy": greedy(f"{work}/{p}.greedy_norepack.jsonl")}
        a, b = entry["perplexity_c512"], nr["perplexity_c512"]
        diverge = []
        for x, y in zip(entry["greedy"], nr["greedy"]):
            same = next((i for i, (s, t) in enumerate(zip(x["generated_ids"], y["generated_ids"])) if s != t), None)
            diverge.append(same)
        nr["differs"] = {
            "ppl_relative": (b["ppl"] - a["ppl"]) / a["ppl"],
            "running_ppl_identical": a["running_ppl_per_chunk"] == b["running_ppl_per_chunk"],
            "greedy_first_differing_step_per_case": diverge,
            "greedy_logits_identical": all(x["argmax_logits"] == y["argmax_logits"]
                                           for x, y in zip(entry["greedy"], nr["greedy"])),
        }
        entry["no_repack"] = nr
    out["presets"][p] = entry

with open(out_json, "w") as fo:
    json.dump(out, fo, indent=1)
    fo.write("\n")
print(f"gen_preset_refs: wrote {out_json}", file=sys.stderr)
for p, e in out["presets"].items():
    nr = e.get("no_repack")
    extra = "" if not nr else (f"; --no-repack {nr['perplexity_c512']['ppl']} "
                               f"(greedy first difference per prompt {nr['differs']['greedy_first_differing_step_per_case']})")
    print(f"  {p:7} {e['sha256'][:12]} PPL {e['perplexity_c512']['ppl']} ± {e['perplexity_c512']['ppl_pm']}{extra}",
          file=sys.stderr)
PY
